import Testing

@testable import AllotCore

/// A training job's own speeds per GPU model (`--speed A100=4.4,T4=1`): the scheduler orders models, prices
/// work, meets walltimes and moves jobs by the job's speeds, not the pool's single figure per model.
@Suite struct SpeedTableTests {
    static func pool(_ nodes: [(String, String, Int, [[Int]])]) -> ClusterState {
        ClusterState.fixture(models: [.h100, .a100, .l4], nodes: nodes, tweak: { $0.scheduler.serviceQueues = [] })
    }

    /// The H100 is 2× an A100 for the pool, but this application runs 2.5× on an A100 and only 1.2× on an
    /// H100: it goes to the A100, expected to take its work / 2.5; a job without speeds of its own takes the
    /// H100.
    @Test func theFastestModelIsTheJobsOwn() throws {
        var s = Self.pool([("h1", "H100", 4, []), ("a1", "A100", 4, [])])
        let own = s.submit(.training(4, estimate: 9000) { $0.speeds = ["A100": 2.5, "H100": 1.2] }, at: 0)
        let plain = s.submit(.training(4, estimate: 9000), at: 0)
        let pass = s.schedule(at: 0)
        #expect(Set(s.starts(pass)) == [own, plain])
        #expect(s.jobs[own]?.allocation?.model == "A100" && s.jobs[plain]?.allocation?.model == "H100")
        #expect(s.jobs[own]?.placement?.expectedSeconds == 3600)
        #expect(s.expectedSeconds(of: try #require(s.jobs[own]).spec, on: .h100) == 7500)
        let why = try #require(Scheduler(policy: .allot).explain(own, in: s)).lines.joined(separator: "\n")
        #expect(why.contains("expected run time 1h"), "\(why)")
    }

    /// A model barely faster for the job (under `nearlyAsFast`, 1.15×) but dearer per unit of work goes
    /// after the cheaper one: the job leaves the H100 to jobs that gain more from it.
    @Test func aJobThatGainsLittleFromADearModelTakesTheCheaperOne() {
        var s = Self.pool([("h1", "H100", 4, []), ("a1", "A100", 4, [])])
        let little = s.submit(.training(4, estimate: 3600) { $0.speeds = ["H100": 1.1] }, at: 0)
        let more = s.submit(.training(4, estimate: 3600) { $0.speeds = ["H100": 1.2] }, at: 0)
        _ = s.schedule(at: 0)
        #expect(s.jobs[little]?.allocation?.model == "A100" && s.jobs[more]?.allocation?.model == "H100")
        let order = PassContext.fastest([.h100, .a100, .l4], [1.1, 1.0, 0.35]).map(\.0)
        #expect(order == [1, 0, 2])
        #expect(PassContext.fastest([.h100, .a100, .l4], [2, 1, 0.35]).map(\.0) == [0, 1, 2])
    }

    /// Per unit of work an L4 ($0.6, speed 0.35) is the cheapest for the pool; for an application that
    /// runs at 4 on an H100 ($4), the H100 is ($1 per reference hour against $1.71).
    @Test func theCheapestWorkIsPricedByTheJobsSpeeds() {
        var s = Self.pool([("h1", "H100", 2, []), ("l1", "L4", 2, [])])
        let own = s.submit(
            .training(2, estimate: 3600) {
                $0.speeds = ["H100": 4]; $0.prefer = .cheapest
            },
            at: 0
        )
        let plain = s.submit(.training(2, estimate: 3600) { $0.prefer = .cheapest }, at: 0)
        _ = s.schedule(at: 0)
        #expect(s.jobs[own]?.allocation?.model == "H100" && s.jobs[plain]?.allocation?.model == "L4")
    }

    /// An application that gains nothing from an H100 does not move there when it frees, while one at the
    /// pool's speeds would.
    @Test func aJobThatGainsNothingOnTheFreedModelStays() {
        var s = Self.pool([("h1", "H100", 8, []), ("a1", "A100", 8, [])])
        let first = s.submit(.training(8, estimate: 10_000), at: 0)
        s.schedule(at: 0)
        let flat = s.submit(.training(8, estimate: 7200) { $0.speeds = ["H100": 1.05] }, at: 10)
        s.schedule(at: 10)
        #expect(s.jobs[flat]?.allocation?.model == "A100")
        s.finish(first, at: 200)
        #expect(s.preemptions(s.schedule(at: 200)).isEmpty && s.jobs[flat]?.state == .running)
    }

    /// The H100s are busy. An L4 (0.35 for the pool) would outrun the walltime of a job of 3000 reference
    /// seconds, so such a job waits for an H100; one that runs at 1.0 on an L4 meets it there and starts.
    @Test func walltimesAreMetByTheJobsSpeeds() {
        var s = Self.pool([("h1", "H100", 4, []), ("l1", "L4", 4, [])])
        let busy = s.submit(.training(4, estimate: 20_000) { $0.gpuModels = ["H100"] }, at: 0)
        s.schedule(at: 0)
        let plain = s.submit(.training(4, estimate: 3000) { $0.walltime = 3600 }, at: 10)
        let own = s.submit(
            .training(4, estimate: 3000) {
                $0.walltime = 3600
                $0.speeds = ["L4": 1]
            },
            at: 10
        )
        let pass = s.schedule(at: 10)
        #expect(s.starts(pass) == [own] && s.jobs[own]?.allocation?.model == "L4")
        #expect(s.jobs[plain]?.state == .pending && s.jobs[busy]?.state == .running)
    }

    @Test func speedsSurviveARestartAndBadOnesAreRefused() throws {
        var s = Self.pool([("a1", "A100", 4, [])])
        let id = s.submit(.training(4, estimate: 100) { $0.speeds = ["A100": 3] }, at: 0)
        s = try ClusterState(image: s.image)
        #expect(s.jobs[id]?.spec.speeds == ["A100": 3])
        #expect(
            ClusterState.specProblems(.inference(1) { $0.speeds = ["A100": 2] })
                == ["speeds per GPU model are for training jobs, not inference"]
        )
        #expect(
            ClusterState.specProblems(.training(1) { $0.speeds = ["A100": 0] })
                == ["the speed on A100 must be above 0, not 0.0"]
        )
        #expect(try JobSpec.parseSpeeds("A100=4.4, T4 = 1").get() == ["A100": 4.4, "T4": 1])
        #expect(
            JobSpec.parseSpeeds("A100").failureMessage
                == "expected MODEL=SPEED entries such as A100=4.4,T4=1, got \"A100\""
        )
        #expect(
            JobSpec.parseSpeeds("A100=fast").failureMessage
                == "the speed on A100 must be a number above 0, not \"fast\""
        )
        #expect(JobSpec.parseSpeeds("A100=1,A100=2").failureMessage == "A100 is given twice")
    }
}

extension Result where Failure == JobSpec.SpeedsProblem {
    var failureMessage: String? { if case .failure(let p) = self { p.message } else { nil } }
}
