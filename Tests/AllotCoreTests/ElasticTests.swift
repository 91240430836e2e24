import Testing

@testable import AllotCore

/// Elastic training jobs (issue 17): start with what is free at or above the fewest GPUs, grow into GPUs
/// that stay free, shrink rather than stop; every resize is a stop and a start on GPUs held for the job.
@Suite struct ElasticTests {
    static func pool(_ nodes: [(String, String, Int, [[Int]])] = [("a1", "A100", 8, [])]) -> ClusterState {
        ClusterState.fixture(models: [.h100, .a100], nodes: nodes, tweak: { $0.scheduler.serviceQueues = [] })
    }

    static func elastic(_ fewest: Int, _ most: Int, step: Int? = nil, estimate: Double = 36_000) -> JobSpec {
        .training(fewest, estimate: estimate) {
            $0.maxGPUs = most
            $0.gpuStep = step
        }
    }

    @Test func sizesAreTheRangeInSteps() {
        let spec = Self.elastic(4, 16, step: 4)
        #expect(spec.isElastic)
        #expect(spec.size(atMost: 3) == nil && spec.size(atMost: 4) == 4 && spec.size(atMost: 11) == 8)
        #expect(spec.size(atMost: 100) == 16)
        #expect(JobSpec.training(4).size(atMost: 8) == 4)
    }

    @Test func aBadRangeIsRefusedWithTheReason() {
        func problems(_ s: JobSpec) -> [String] { ClusterState.specProblems(s) }
        #expect(problems(Self.elastic(8, 4)).contains { $0.contains("fewest first") })
        #expect(problems(Self.elastic(4, 16, step: 5)).contains { $0.contains("GPU step 5") })
        var serve = JobSpec.inference(2)
        serve.maxGPUs = 4
        #expect(problems(serve).contains { $0.contains("only training on whole GPUs is elastic") })
        var fixed = JobSpec.training(2)
        fixed.gpuStep = 2
        #expect(problems(fixed).contains { $0.contains("is for an elastic job") })
    }

    @Test func itStartsWithWhatIsFreeAfterTheJobsThatWait() throws {
        var s = Self.pool()
        let first = s.submit(.training(2, estimate: 36_000), at: 0)
        s.schedule(at: 0)
        let e = s.submit(Self.elastic(2, 8, step: 2), at: 10)
        let rigid = s.submit(.training(2, estimate: 600), at: 11)
        let pass = s.schedule(at: 20)
        #expect(Set(s.starts(pass)) == [e, rigid])
        #expect(s.jobs[e]?.allocation?.gpuCount == 4, "the rigid job behind it took its 2 first")
        _ = first
        // Not enough for its fewest: it waits.
        let big = s.submit(Self.elastic(4, 8), at: 30)
        #expect(s.starts(s.schedule(at: 30)).isEmpty && s.jobs[big]?.state == .pending)
    }

    @Test func itGrowsIntoGPUsThatFreeAndTheResizeSurvivesARestart() throws {
        var s = Self.pool()
        let other = s.submit(.training(4, estimate: 36_000), at: 0)
        let e = s.submit(Self.elastic(2, 8), at: 0)
        s.schedule(at: 0)
        #expect(s.jobs[e]?.allocation?.gpuCount == 4)
        s.finish(other, at: 600)
        let pass = s.schedule(at: 600)
        #expect(s.preemptions(pass).map { "\($0.victim) \($0.by) \($0.reason)" } == ["\(e) \(e) resize"])
        #expect(s.jobs[e]?.heldGPUs.map(\.description) == ["a1[0-7]"])
        let why = try #require(Scheduler(policy: .allot).explain(e, in: s)).lines.joined(separator: "\n")
        #expect(why.contains("grows into GPUs that came free") && why.contains("starts again on 8 GPU(s)"), "\(why)")
        s = try ClusterState(image: s.image)
        s.finish(e, code: 143, at: 630)
        let again = s.schedule(at: 630)
        #expect(s.starts(again) == [e] && s.jobs[e]?.allocation?.gpuCount == 8)
        #expect(s.jobs[e]?.preemptions == 0 && s.jobs[e]?.moves == 0)
    }

    @Test func itShrinksRatherThanStopForAJobThatMayTakeItsGPUs() throws {
        var s = Self.pool()
        let e = s.submit(Self.elastic(2, 8, step: 2), at: 0)
        s.schedule(at: 0)
        #expect(s.jobs[e]?.allocation?.gpuCount == 8)
        let serve = s.submit(.inference(4), at: 300)
        let pass = s.schedule(at: 300)
        #expect(s.preemptions(pass).map { "\($0.victim) \($0.by)" } == ["\(e) \(serve)"])
        #expect(s.jobs[e]?.heldGPUs.map(\.description) == ["a1[0-3]"])
        s.finish(e, code: 143, at: 310)
        let after = s.schedule(at: 310)
        #expect(Set(s.starts(after)) == [e, serve])
        #expect(s.jobs[e]?.allocation?.description == "a1[0-3]" && s.jobs[serve]?.allocation?.description == "a1[4-7]")
    }

    /// GPUs an elastic job grew into were idle: a training job of its class that arrives later gets them
    /// back (the elastic job shrinks), even from a job protected after many preemptions — not in its first
    /// minutes, and not for a job of a later attained-service queue.
    @Test func itGivesBackGPUsItGrewIntoToAJobOfItsClassThatWaits() throws {
        var s = Self.pool()
        let e = s.submit(Self.elastic(2, 8), at: 0)
        s.schedule(at: 0)
        #expect(s.jobs[e]?.allocation?.gpuCount == 8)
        // Within the minimum runtime it keeps them.
        let rigid = s.submit(.training(3, estimate: 600), at: 60)
        #expect(s.preemptions(s.schedule(at: 60)).isEmpty && s.jobs[rigid]?.state == .pending)
        let pass = s.schedule(at: 300)
        #expect(s.preemptions(pass).map { "\($0.victim) \($0.by) \($0.reason)" } == ["\(e) \(rigid) resize"])
        #expect(s.jobs[e]?.heldGPUs.map(\.description) == ["a1[0-4]"])
        let why = try #require(Scheduler(policy: .allot).explain(rigid, in: s)).lines.joined(separator: "\n")
        #expect(why.contains("1 job(s) were told to stop to make room for it"), "\(why)")
        let itsWhy = try #require(Scheduler(policy: .allot).explain(e, in: s)).lines.joined(separator: "\n")
        #expect(itsWhy.contains("stopping: gives back GPUs it grew into to job \(rigid)"), "\(itsWhy)")
        s.finish(e, code: 143, at: 330)
        #expect(Set(s.starts(s.schedule(at: 330))) == [e, rigid])
        #expect(s.jobs[e]?.allocation?.gpuCount == 5 && s.jobs[e]?.preemptions == 0)

        // Protected after too many preemptions, it still gives back what it grew into.
        var t = Self.pool()
        let p = t.submit(Self.elastic(2, 8), at: 0)
        t.schedule(at: 0)
        t.jobs[existing: p].preemptions = t.config.preemption.maxPreemptions
        let late = t.submit(.training(2, estimate: 600), at: 300)
        #expect(t.preemptions(t.schedule(at: 300)).map { "\($0.victim) \($0.by)" } == ["\(p) \(late)"])
    }

    @Test func aShrinkNeverGoesBelowTheFewestGPUs() {
        var s = Self.pool()
        let e = s.submit(Self.elastic(6, 8), at: 0)
        s.schedule(at: 0)
        let serve = s.submit(.inference(4), at: 300)
        let pass = s.schedule(at: 300)
        // It could give only 2: it is stopped whole instead, and keeps nothing.
        #expect(s.preemptions(pass).map { "\($0.victim) \($0.by)" } == ["\(e) \(serve)"])
        #expect(s.jobs[e]?.heldGPUs.isEmpty == true)
    }

    /// A shrink keeps enough GPUs for the rest of the run to fit the job's walltime (each run has its own).
    @Test func aShrinkKeepsTheRunWithinItsWalltime() {
        var s = Self.pool()
        // Walltime 1000 s: at 300 s it has 700 s left on 8 GPUs, which needs at least 6 to fit 1000 s.
        let e = s.submit(
            .training(2, estimate: 36_000) {
                $0.maxGPUs = 8
                $0.walltime = 1000
            },
            at: 0
        )
        s.schedule(at: 0)
        let serve = s.submit(.inference(2), at: 300)
        let pass = s.schedule(at: 300)
        #expect(s.preemptions(pass).map { "\($0.victim) \($0.by)" } == ["\(e) \(serve)"])
        #expect(s.jobs[e]?.heldGPUs.map(\.description) == ["a1[0-5]"])
        // Needing 4 it cannot shrink that far: it is stopped whole.
        var t = Self.pool()
        let f = t.submit(
            .training(2, estimate: 36_000) {
                $0.maxGPUs = 8
                $0.walltime = 1000
            },
            at: 0
        )
        t.schedule(at: 0)
        t.submit(.inference(4), at: 300)
        t.schedule(at: 300)
        #expect(t.jobs[f]?.state == .stopping && t.jobs[f]?.heldGPUs.isEmpty == true)
    }

    @Test func itNeverSpansTwoModels() {
        var s = Self.pool([("h1", "H100", 4, []), ("a1", "A100", 4, [])])
        let e = s.submit(Self.elastic(2, 8), at: 0)
        s.schedule(at: 0)
        #expect(s.jobs[e]?.allocation?.model == "H100" && s.jobs[e]?.allocation?.gpuCount == 4)
        #expect(s.preemptions(s.schedule(at: 1000)).isEmpty)
    }
}
