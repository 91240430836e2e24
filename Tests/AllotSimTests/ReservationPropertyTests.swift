import AllotConfig
import AllotCore
import PropertyBased
import Synchronization
import Testing

@testable import AllotSim

/// EASY backfill must never delay the reservation: when walltimes are exact and nothing can outrank the
/// job holding it, that job starts no later than the time it was first promised (allot: plus the notice
/// lent GPUs get when they are taken back).
@Suite struct ReservationPropertyTests {
    static let pool = """
        [scheduler]
        size_weight = 0
        fairshare_weight = 0
        # Attained service would let a job that has used less go first: nothing may outrank the holder.
        service_queues = []
        [[gpu_model]]
        name = "A"
        memory_gib = 80
        price_per_hour = 1
        [[node_group]]
        prefix = "n"
        count = 4
        gpu_model = "A"
        gpus = 8
        """

    static func trace(_ seeds: [Int]) -> Trace {
        var t = 0.0
        var jobs: [TraceJob] = []
        for (i, s) in seeds.enumerated() {
            t += Double(s % 97) * 3
            let gpus = [1, 1, 2, 4, 8, 8, 16, 24][s % 8]
            let duration = Double(60 + (s / 8) % 5000)
            jobs.append(
                TraceJob(
                    id: "j\(i)",
                    name: "",
                    kind: .training,
                    tenant: "t",
                    gpus: gpus,
                    gpuModels: [],
                    minGPUMemoryGiB: nil,
                    topology: .any,
                    priorityClass: nil,
                    submitTime: t,
                    duration: duration,
                    walltime: duration,
                    estimate: duration
                )
            )
        }
        return Trace(jobs: jobs)
    }

    @Test(arguments: [Scheduler.Policy.backfill, .allot])
    func backfillNeverDelaysTheReservation(policy: Scheduler.Policy) async throws {
        let state = try ConfigFile.parse(Self.pool).makeState()
        // How many promises were checked, over every case: a run where none formed would prove nothing.
        let checked = Mutex(0)
        await propertyCheck(count: 30, input: Gen.int(in: 0...1_000_000).array(of: 20...120)) { seeds in
            var promised: [JobID: Double] = [:]
            var sim = Simulator(policy: policy)
            sim.restartOverhead = 0
            sim.onPass = { _, pass, _ in
                if let r = pass.reservation, let from = r.from, promised[r.job] == nil {
                    promised[r.job] = from.seconds
                }
            }
            guard let result = try? sim.run(Self.trace(seeds), on: state) else {
                Issue.record("the simulation failed")
                return
            }
            let slack = policy == .allot ? state.config.preemption.loanGrace : 0
            for (id, at) in promised {
                let start = result.state.jobs[id]!.firstStartTime!.seconds
                #expect(start <= at + slack + 1e-6, "job \(id) was promised \(at) and started at \(start)")
            }
            checked.withLock { $0 += promised.count }
        }
        let promises = checked.withLock { $0 }
        #expect(promises >= 30, "only \(promises) reservations formed in 30 workloads: the property tested little")
    }
}
