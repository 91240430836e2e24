import AllotConfig
import AllotCore
import Foundation
import Testing

@testable import AllotSim

@Suite struct SimulatorTests {
    static func pool(_ toml: String) throws -> ClusterState { try ConfigFile.parse(toml).makeState() }

    static let oneNode = """
        [[gpu_model]]
        name = "A"
        memory_gib = 80
        price_per_hour = 3.6
        [[node]]
        name = "n1"
        gpu_model = "A"
        gpus = 4
        """

    static let twoModels = """
        [[gpu_model]]
        name = "fast"
        memory_gib = 80
        price_per_hour = 4
        speed = 2
        [[gpu_model]]
        name = "slow"
        memory_gib = 24
        price_per_hour = 1
        speed = 0.5
        [[node]]
        name = "f1"
        gpu_model = "fast"
        gpus = 1
        [[node]]
        name = "s1"
        gpu_model = "slow"
        gpus = 1
        """

    /// An elastic job (1-4 GPUs, 7200 s of work at 2 GPUs) starts on the 2 GPUs left free, grows to 4 when
    /// the other job ends, and ends sooner than at a fixed 2: linear speed-up.
    @Test func anElasticJobGrowsAndEndsSooner() throws {
        let text = """
            id,kind,submit_time,duration,gpus,min_gpus,max_gpus
            other,training,0,600,2,,
            e,training,0,7200,2,1,4
            """
        let trace = try Trace.parse(text)
        #expect(trace.jobs[1].elastic == TraceJob.Elastic(fewest: 1, most: 4))
        #expect(trace.jobs[1].spec.gpus == 1 && trace.jobs[1].spec.maxGPUs == 4)
        #expect(trace.jobs[1].speedUp(on: 4) == 2 && trace.jobs[1].speedUp(on: 1) == 0.5)
        let r = try Simulator(policy: .allot).run(trace, on: try Self.pool(Self.oneNode))
        let e = try #require(r.state.jobs.values.first { $0.spec.name == "e" })
        let end = try #require(e.endTime?.seconds)
        #expect(r.counts.grows >= 1, "\(r.counts)")
        // At 2 GPUs it would end at 7200 s; growing to 4 at about 600 s ends it near 4000 s.
        #expect(end < 6000, "ended at \(end)")
        #expect(r.summary().grows == r.counts.grows)
        let bad = "id,kind,submit_time,duration,gpus,min_gpus,max_gpus\nx,inference,0,60,2,1,4\n"
        #expect(throws: TraceError.self) { try Trace.parse(bad) }
    }

    /// A job waiting behind young training starts when the minimum run time ends (a pass looks again then,
    /// as the daemon's tick does), not when the training ends.
    @Test func aWaitingJobIsLookedAtAgainWhenTheMinimumRunTimeEnds() throws {
        let trace = try Trace.parse("id,kind,submit_time,duration,gpus\nt,training,0,7200,4\ns,inference,30,600,1\n")
        let result = try Simulator().run(trace, on: try Self.pool(Self.oneNode))
        let serve = try #require(result.state.jobs.values.first { $0.spec.kind == .inference })
        // min_runtime 2m (default), grace 30s: preempted at 120 s, started at 150 s.
        #expect(serve.startTime == Instant(seconds: 150), "\(String(describing: serve.startTime))")
    }

    /// The inference reserve's figures: a 2-GPU training job borrows the idle reserve at 0; a 4-GPU replica
    /// takes it back at 100 (loan grace 5 s). With checkpoints every 60 s the job loses the 45 s since its
    /// last one, and 60 s more to restart, on 2 GPUs.
    @Test func reserveFiguresCountLoansTakenBackAndTheWorkLost() throws {
        let pool = try Self.pool(
            Self.oneNode + """

                [preemption]
                loan_grace = "5s"
                [[inference_reserve]]
                gpu_model = "A"
                gpus = 4
                """
        )
        let trace = try Trace.parse("id,kind,submit_time,duration,gpus\nt,training,0,1000,2\ns,inference,100,600,4\n")
        var sim = Simulator()
        sim.checkpointEvery = 60
        let r = try sim.run(trace, on: pool).summary()
        let reserve = try #require(r.reserve)
        #expect(reserve.loans == 2, "the first run and the one after the replica")
        #expect(reserve.takenBack == 1)
        #expect(reserve.takenBackShare == 0.5)
        #expect(abs(reserve.lostGPUHours - (45 + 60) * 2 / 3600) < 1e-9, "\(reserve.lostGPUHours)")
        #expect(reserve.spillOverUSD == 0)
        #expect(r.lostGPUHours == reserve.lostGPUHours)
        // Without a reserve there is no such figure.
        #expect(try Simulator().run(trace, on: try Self.pool(Self.oneNode)).summary().reserve == nil)
    }

    @Test func figuresOfAHandWorkedTrace() throws {
        let trace = try Trace.parse("submit_time,duration,gpus\n0,100,4\n10,50,2\n")
        let r = try Simulator(policy: .allot).run(trace, on: try Self.pool(Self.oneNode))
        let s = r.summary()
        #expect(s.jobs == 2)
        #expect(s.completed == 2)
        #expect(s.makespan == 150)
        #expect(s.avgJCT == 120)  // 100 and 140
        #expect(s.p99JCT == 140)
        #expect(s.avgWait == 45)  // 0 and 90
        #expect(abs(s.utilization - 500.0 / 600.0) < 1e-12)
        #expect(abs(s.costUSD - (4 * 100 + 2 * 50) * 0.001) < 1e-9)  // $3.6/GPU-h = $0.001/GPU-s
        #expect(s.waste == 0)
    }

    @Test func trainingTakesLongerOnSlowerGPUsAndInferenceDoesNot() throws {
        let trace = try Trace.parse(
            """
            id,submit_time,duration,gpus,kind,gpu_model
            t-fast,0,100,1,training,fast
            t-slow,0,100,1,training,slow
            i-slow,200,100,1,inference,slow
            """
        )
        let r = try Simulator().run(trace, on: try Self.pool(Self.twoModels))
        let ends = Dictionary(
            uniqueKeysWithValues: r.state.jobs.values.map {
                (r.trace.jobs[r.traceIndex[$0.id]!].id, $0.endTime!.seconds - $0.firstStartTime!.seconds)
            }
        )
        #expect(ends["t-fast"] == 50)
        #expect(ends["t-slow"] == 200)
        #expect(ends["i-slow"] == 100)
    }

    /// A trace's `speeds` column gives a job its own speed per model: the scheduler is told it, and the job
    /// runs at it (here 4 on the slow model, 1 on the fast one: both jobs take the slow GPU first).
    @Test func aJobRunsAtItsOwnSpeedsFromTheTrace() throws {
        let trace = try Trace.parse(
            """
            id,submit_time,duration,gpus,speeds
            own,0,400,1,slow=4|fast=1
            plain,0,400,1,
            """
        )
        #expect(trace.jobs[0].spec.speeds == ["slow": 4, "fast": 1] && trace.jobs[1].spec.speeds.isEmpty)
        let r = try Simulator(policy: .allot).run(trace, on: try Self.pool(Self.twoModels))
        let runs = Dictionary(
            uniqueKeysWithValues: r.state.jobs.values.map {
                (
                    r.trace.jobs[r.traceIndex[$0.id]!].id,
                    ($0.placement?.model, $0.endTime!.seconds - $0.firstStartTime!.seconds)
                )
            }
        )
        #expect(runs["own"]?.0 == "slow" && runs["own"]?.1 == 100)
        #expect(runs["plain"]?.0 == "fast" && runs["plain"]?.1 == 200)
        // Hidden from the scheduler (--hide-speeds), the speeds still rule how fast the job runs: placed by
        // the pool's speeds, it takes the fast model first, where it runs at 1 (400 s instead of 100).
        var hidden = trace
        hidden.hideSpeeds()
        #expect(hidden.jobs[0].spec.speeds.isEmpty && hidden.jobs[0].speeds == ["slow": 4, "fast": 1])
        let h = try Simulator(policy: .allot).run(hidden, on: try Self.pool(Self.twoModels))
        let took = h.state.jobs.values.map {
            "\(h.trace.jobs[h.traceIndex[$0.id]!].id) \($0.placement?.model ?? "?") \($0.endTime!.seconds - $0.firstStartTime!.seconds)"
        }
        #expect(took.contains("own fast 400.0"), "\(took)")
    }

    @Test func walltimeStopsJobsThatRunOver() throws {
        let trace = try Trace.parse("submit_time,duration,gpus,walltime\n0,500,1,100\n0,50,1,100\n")
        let r = try Simulator().run(trace, on: try Self.pool(Self.oneNode))
        let s = r.summary()
        #expect(s.timedOut == 1)
        // As allotd does it: told to stop at its walltime, it has its grace (the default, 30 s) to exit.
        #expect(s.makespan == 100 + 30)
        #expect(r.state.jobs.values.filter { $0.state == .completed }.count == 1)
    }

    @Test func fifoWastesGPUsBehindABlockedHeadAndAllotDoesNot() throws {
        // A 3-GPU job holds the head while 1-GPU jobs could run on the idle GPU.
        let trace = try Trace.parse(
            """
            submit_time,duration,gpus
            0,100,2
            1,100,3
            2,50,1
            3,50,1
            """
        )
        let state = try Self.pool(Self.oneNode)
        let fifo = try Simulator(policy: .fifo).run(trace, on: state).summary()
        let allot = try Simulator(policy: .allot).run(trace, on: state).summary()
        #expect(fifo.waste > 0)
        #expect(allot.waste == 0)
        #expect(allot.avgJCT < fifo.avgJCT)
    }

    @Test func jobsThatCanNeverStartAreCountedNotWaitedFor() throws {
        let trace = try Trace.parse("submit_time,duration,gpus\n0,10,1\n0,10,5\n")
        let s = try Simulator().run(trace, on: try Self.pool(Self.oneNode)).summary()
        #expect(s.completed == 1)
        #expect(s.unschedulable == 1)
        #expect(s.makespan == 10)
    }

    @Test func generatedWorkloadRunsToTheEndWithInvariantsIntact() throws {
        let trace = Self.generated(jobs: 600, seed: 42)
        let state = try ConfigFile.load(path: Self.examplePath).makeState()
        for policy in Scheduler.Policy.allCases {
            var sim = Simulator(policy: policy)
            sim.paranoid = true
            let r = try sim.run(trace, on: state)
            let s = r.summary()
            #expect(s.completed + s.unschedulable == s.jobs, "\(policy)")
            #expect(s.utilization > 0 && s.utilization <= 1)
            #expect(r.state.activeJobs.isEmpty)
        }
    }

    @Test func sameTraceGivesTheSameFigures() throws {
        let trace = Self.generated(jobs: 300, seed: 7)
        let state = try ConfigFile.load(path: Self.examplePath).makeState()
        let a = try Simulator().run(trace, on: state)
        let b = try Simulator().run(trace, on: state)
        #expect(a.summary() == b.summary())
        #expect(a.timelineCSV() == b.timelineCSV())
    }

    @Test func jsonSummaryHasTheDocumentedKeys() throws {
        let trace = Self.generated(jobs: 50, seed: 1)
        let state = try ConfigFile.load(path: Self.examplePath).makeState()
        let data = try JSONEncoder().encode(try Simulator().run(trace, on: state).summary())
        let object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        for key in [
            "jobs", "completed", "makespan_s", "avg_jct_s", "p50_jct_s", "p99_jct_s", "avg_wait_s", "p99_wait_s",
            "utilization", "cost_usd", "preemptions", "waste", "by_kind",
        ] {
            #expect(object[key] != nil, "missing \(key)")
        }
        let byKind = object["by_kind"] as! [String: [String: Any]]
        for kind in ["training", "inference"] {
            for key in ["avg_wait_s", "p99_wait_s", "avg_jct_s", "p99_jct_s", "cost_usd"] {
                #expect(byKind[kind]?[key] != nil, "missing by_kind.\(kind).\(key)")
            }
        }
    }

    static var examplePath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("etc/allot/allotd.toml").path
    }

    /// A seeded mixed workload: Poisson-like arrivals, heavy-tailed durations, mostly small gangs.
    static func generated(jobs: Int, seed: UInt64) -> Trace {
        var rng = SplitMix(seed: seed)
        var t = 0.0
        var out: [TraceJob] = []
        for i in 0..<jobs {
            t += rng.exponential(mean: 120)
            let inference = rng.next() % 5 == 0
            let gpus = inference ? 1 : [1, 1, 1, 2, 4, 8, 16][Int(rng.next() % 7)]
            out.append(
                TraceJob(
                    id: "g\(i)",
                    name: "",
                    kind: inference ? .inference : .training,
                    tenant: "t\(rng.next() % 3)",
                    gpus: gpus,
                    gpuModels: [],
                    minGPUMemoryGiB: inference ? 20 : nil,
                    topology: gpus == 8 && rng.next() % 2 == 0 ? .nvlink : .any,
                    priorityClass: nil,
                    submitTime: t,
                    duration: 60 + rng.exponential(mean: 3600),
                    walltime: rng.next() % 10 == 0 ? 1800 : nil,
                    estimate: nil
                )
            )
        }
        return Trace(jobs: out)
    }
}

/// A small seeded generator (SplitMix64) so generated traces are the same on every run.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }
    mutating func exponential(mean: Double) -> Double { -mean * log(1 - uniform()) }
}
