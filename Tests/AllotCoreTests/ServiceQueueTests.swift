import Foundation
import Testing

@testable import AllotCore

/// Attained-service queues among training jobs (Tiresias-style; issue 17).
@Suite struct ServiceQueueTests {
    /// One A100 node of 8 GPUs, the size factor off, with the given queue thresholds (GPU-seconds).
    static func pool(
        queues: [Double],
        factor: Double = 2,
        minimum: Double = 1800,
        nodes: Int = 1
    ) -> ClusterState {
        ClusterState.fixture(
            models: [.a100],
            nodes: (1...nodes).map { ("n\($0)", "A100", 8, []) },
            tweak: { config in
                config.scheduler.sizeWeight = 0
                config.scheduler.serviceQueues = queues
                config.scheduler.starvationFactor = factor
                config.scheduler.starvationMinimum = minimum
            }
        )
    }

    @Test func queueOfAJobFollowsItsGPUHoursAndItsWait() {
        var s = SchedulerSettings()
        s.serviceQueues = [3600, 36_000]
        s.starvationFactor = 2
        s.starvationMinimum = 600
        #expect(s.serviceQueue(gpuSeconds: 0, runSeconds: 0, waited: 1e6) == 0, "the first queue is never promoted")
        #expect(s.serviceQueue(gpuSeconds: 3599, runSeconds: 100, waited: 0) == 0)
        #expect(s.serviceQueue(gpuSeconds: 3600, runSeconds: 450, waited: 0) == 1)
        #expect(s.serviceQueue(gpuSeconds: 40_000, runSeconds: 5000, waited: 9999) == 2)
        #expect(s.serviceQueue(gpuSeconds: 40_000, runSeconds: 5000, waited: 10_000) == -1, "waited 2× its run")
        #expect(s.serviceQueue(gpuSeconds: 4000, runSeconds: 100, waited: 599) == 1, "the minimum wait applies")
        #expect(s.serviceQueue(gpuSeconds: 4000, runSeconds: 100, waited: 600) == -1)
        s.starvationFactor = 0
        #expect(s.serviceQueue(gpuSeconds: 40_000, runSeconds: 5000, waited: 1e9) == 2, "factor 0: never promoted")
        s.serviceQueues = []
        #expect(s.serviceQueue(gpuSeconds: 40_000, runSeconds: 5000, waited: 1e9) == 0, "no queues")
    }

    @Test func aNewJobPreemptsOneThatHasUsedMoreGPUHours() throws {
        var s = Self.pool(queues: [3600])
        let long = s.submit(.training(8), at: 0)
        s.schedule(at: 0)
        // At 1000 s the long job has used 8000 GPU-seconds: past the first queue's 3600.
        let fresh = s.submit(.training(8), at: 1000)
        let pass = s.scheduleAndSettle(at: 1000)
        #expect(s.preemptions(pass).map(\.victim) == [long])
        #expect(s.preemptions(pass).map(\.reason) == [.service])
        let history = try #require(s.jobs[long]?.history.last)
        #expect(history.ended.contains("which has used fewer GPU-hours"), "\(history.ended)")
        let next = s.schedule(at: 1001)
        #expect(s.starts(next) == [fresh])
        // The victim waits in the second queue, and says so.
        let why = try #require(Scheduler(policy: .allot).explain(long, in: s)).lines.joined(separator: "\n")
        #expect(why.contains("attained service: 2.2 GPU-h, queue 2 of 2 (thresholds 1 GPU-h"), "\(why)")
        let running = try #require(Scheduler(policy: .allot).explain(fresh, in: s)).lines.joined(separator: "\n")
        #expect(running.contains("attained service: 0 GPU-h, queue 1 of 2"), "\(running)")
        // It does not take the GPUs back: the new job is not in a later queue until it has used 1 GPU-h.
        #expect(s.preemptions(s.schedule(at: 1200)).isEmpty)
    }

    @Test func noPreemptionByServiceWithoutQueuesUnderOtherPoliciesOrForJobsThatOptOut() {
        func preempted(_ queues: [Double], policy: Scheduler.Policy = .allot, preemptible: Bool? = nil) -> Bool {
            var s = Self.pool(queues: queues)
            s.submit(.training(8) { $0.preemptible = preemptible }, at: 0)
            s.schedule(at: 0, policy: policy)
            s.submit(.training(8), at: 1000)
            return !s.preemptions(s.schedule(at: 1000, policy: policy)).isEmpty
        }
        #expect(preempted([3600]))
        #expect(!preempted([]))
        #expect(!preempted([3600], policy: .backfill))
        #expect(!preempted([3600], preemptible: false))
        // Inference is never a victim (nor a preemptor) by attained service.
        var s = Self.pool(queues: [3600])
        s.submit(.inference(8), at: 0)
        s.schedule(at: 0)
        s.submit(.training(8), at: 5000)
        #expect(s.preemptions(s.schedule(at: 5000)).isEmpty)
    }

    /// A job that reports checkpoints is taken for attained service only just after one (it loses little);
    /// one that reports none is taken to save on the notice.
    @Test func aJobThatReportsCheckpointsIsTakenOnlyJustAfterOne() throws {
        var s = Self.pool(queues: [3600])
        let long = s.submit(.training(8), at: 0)
        s.schedule(at: 0)
        try s.apply(Event(time: Instant(seconds: 600), .jobCheckpointed(id: long)))
        s.submit(.training(8), at: 1000)
        // 400 s since its checkpoint, beyond the 300 s window: not now.
        #expect(s.preemptions(s.schedule(at: 1000)).isEmpty)
        try s.apply(Event(time: Instant(seconds: 1200), .jobCheckpointed(id: long)))
        let why = try #require(Scheduler(policy: .allot).explain(long, in: s)).lines.joined(separator: "\n")
        #expect(why.contains("last checkpoint reported 0s ago"), "\(why)")
        let pass = s.schedule(at: 1260)
        #expect(s.preemptions(pass).map(\.victim) == [long])
        #expect(s.preemptions(pass).map(\.reason) == [.service])
    }

    @Test func theMinimumRuntimeShieldsAJobThatJustStarted() {
        var s = Self.pool(queues: [60])
        let first = s.submit(.training(8), at: 0)
        s.schedule(at: 0)
        s.submit(.training(8), at: 100)
        // 800 GPU-seconds used (past 60), but it started 100 s ago, under the 120 s minimum runtime.
        #expect(s.preemptions(s.schedule(at: 100)).isEmpty)
        #expect(s.preemptions(s.schedule(at: 130)).map(\.victim) == [first])
    }

    @Test func aJobThatWaitedTooLongGoesFirstButPreemptsOnlyLaterQueues() throws {
        var s = Self.pool(queues: [3600], factor: 0.05, minimum: 100)
        let a = s.submit(.training(8), at: 0)
        s.schedule(at: 0)
        let b = s.submit(.training(8), at: 1000)
        s.scheduleAndSettle(at: 1000)
        #expect(s.starts(s.schedule(at: 1001)) == [b])
        let c = s.submit(.training(8), at: 1050)
        // At 1100 a (second queue, ran 1000 s) has waited 100 s ≥ max(100, 0.05 × 1000): promoted ahead of
        // c (first queue), but b is in the first queue (800 GPU-seconds): no preemption.
        let pass = s.schedule(at: 1100)
        #expect(s.preemptions(pass).isEmpty)
        let order = Scheduler(policy: .allot).rankedPending(s, at: Instant(seconds: 1100)).map(\.id)
        #expect(order == [a, c])
        try s.apply(Event(time: Instant(seconds: 1100), .clockTick))
        let why = try #require(Scheduler(policy: .allot).explain(a, in: s)).lines.joined(separator: "\n")
        #expect(why.contains("at the head of queue 1 of 2"), "\(why)")
        // Once b has used 1 GPU-h (at 1450) it is in the second queue: the promoted job takes its GPUs.
        let later = s.schedule(at: 1500)
        #expect(s.preemptions(later).map(\.victim) == [b])
        #expect(s.preemptions(later).map(\.by) == [a])
        // a's promoted run is in the first queue until it alone has used the threshold (1 GPU-h at 8 GPUs:
        // 450 s after its start at 1530), as Tiresias resets a promoted job's service; then c, of the first
        // queue, may take its GPUs.
        s.finish(b, code: 143, at: 1530)
        #expect(s.starts(s.schedule(at: 1530)) == [a])
        let promoted = s.runViews(at: Instant(seconds: 1900)).first { $0.id == a }
        #expect(promoted?.queue == 0)
        let spent = s.runViews(at: Instant(seconds: 2000)).first { $0.id == a }
        #expect(spent?.queue == 1)
    }

    /// No job waits without bound: a stream of small jobs in the first queue keeps the pool busy while jobs
    /// that have used more wait in the second; each wait (from submit, or from the end of a run) stays under
    /// a bound the starvation rule gives, on random workloads.
    @Test(arguments: 1...8)
    func noJobWaitsWithoutBound(seed: Int) {
        let bound = Self.worstWait(seed: UInt64(seed), factor: 2)
        #expect(bound.finished, "seed \(seed): not every job finished")
        #expect(bound.worst <= 4 * 3600, "seed \(seed): a job waited \(Int(bound.worst)) s")
    }

    @Test func withoutTheStarvationRuleAJobWaitsForTheStreamToEnd() {
        let bound = Self.worstWait(seed: 1, factor: 0)
        #expect(bound.worst > 4 * 3600, "the property test would not notice starvation (\(Int(bound.worst)) s)")
    }

    /// Runs a seeded workload on one 8-GPU node with queues at 1 GPU-h: a few long 4-GPU jobs, and small
    /// 1–2-GPU jobs arriving for 12 hours at 0.9× the pool's capacity. Jobs checkpoint on notice (a
    /// preempted job keeps its progress). Returns the longest single wait, and whether all jobs finished.
    static func worstWait(seed: UInt64, factor: Double) -> (worst: Double, finished: Bool) {
        var rng = SplitMix64(seed: seed)
        var s = pool(queues: [3600], factor: factor, minimum: 1800)
        var arrivals: [(at: Double, gpus: Int, work: Double)] = []
        for i in 0..<3 { arrivals.append((Double(i) * 60, 4, 3000 + Double(rng.next() % 3000))) }
        var t = 0.0
        while t < 12 * 3600 {
            t += -104 * log(max(1e-9, Double(rng.next() % 1_000_000) / 1_000_000))
            arrivals.append((t, 1 + Int(rng.next() % 2), 200 + Double(rng.next() % 600)))
        }
        var left: [JobID: Double] = [:]
        var since: [JobID: Double] = [:]
        var startedAt: [JobID: Double] = [:]
        var worst = 0.0
        var next = 0
        var now = 0.0
        let step = 30.0
        while now < 48 * 3600 && (next < arrivals.count || !left.isEmpty) {
            while next < arrivals.count && arrivals[next].at <= now {
                let a = arrivals[next]
                let id = s.submit(.training(a.gpus, estimate: a.work), at: now)
                left[id] = a.work
                since[id] = now
                next += 1
            }
            for id in s.activeJobs.sorted() {
                guard let job = s.jobs[id], let start = startedAt[id] else { continue }
                if job.state == .stopping {
                    left[id]! -= now - start
                    startedAt[id] = nil
                    s.finish(id, code: 143, at: now)
                    since[id] = now
                } else if now - start >= left[id]! {
                    left[id] = nil
                    startedAt[id] = nil
                    s.finish(id, at: now)
                }
            }
            let pass = s.schedule(at: now)
            for id in s.starts(pass) {
                worst = max(worst, now - since[id]!)
                startedAt[id] = now
            }
            now += step
        }
        return (worst, left.isEmpty)
    }
}
