import AllotCore
import Testing

@testable import AllotSim

@Suite struct TraceTests {
    @Test func readsTheDocumentedColumns() throws {
        let t = try Trace.parse(
            """
            id,name,kind,tenant,submit_time,duration,gpus,gpu_model,priority,walltime,topology,min_gpu_memory,extra
            j1,"train, big",training,research,10,3600,8,H100|A100,batch,7200,single-node,40,ignored
            j2,,inference,product,0,600,1,,,,,,
            """
        )
        #expect(t.jobs.map(\.id) == ["j2", "j1"], "sorted by submit time")
        let j1 = t.jobs[1]
        #expect(j1.name == "train, big")
        #expect(j1.gpuModels == ["H100", "A100"])
        #expect(j1.priorityClass == "batch")
        #expect(j1.walltime == 7200)
        #expect(j1.topology == .singleNode)
        #expect(j1.minGPUMemoryGiB == 40)
        #expect(t.jobs[0].kind == .inference)
        #expect(t.jobs[0].tenant == "product")
    }

    @Test func readsSharesCPUsAndMemoryAsOpenbNamesThem() throws {
        let t = try Trace.parse(
            """
            submit_time,duration,gpus,gpu_milli,cpu_milli,memory_mib,gpu_spec
            0,60,1,250,8000,16384,V100M16|T4
            1,60,0.5,,,,
            2,60,2,1000,,,
            3,60,1,,,,
            """
        )
        #expect(t.jobs.map(\.gpuShare) == [250, 500, nil, nil])
        #expect(t.jobs[0].cpuMilli == 8000 && t.jobs[0].memoryMiB == 16384)
        #expect(t.jobs[0].gpuModels == ["V100M16", "T4"])
        #expect(t.jobs[0].spec.gpuShare == 250 && t.jobs[0].spec.cpuMilli == 8000)
        #expect(t.jobs[2].gpus == 2 && t.jobs[2].gpuShare == nil)
    }

    @Test func readsPhillyColumnsAndDateTimesFromTheFirstSubmit() throws {
        let t = try Trace.parse(
            """
            timestamp,duration,num_gpus,gpu_time,cluster
            2017-10-09 07:01:55,66.0,1,66.0,11cb48
            2017-10-09 06:13:03,2951.0,4,11804.0,6214e9
            """
        )
        #expect(t.jobs.map(\.submitTime) == [0, 2932])
        #expect(t.jobs[0].tenant == "6214e9")
        #expect(t.jobs[0].gpus == 4)
        #expect(t.jobs[0].kind == .training)
        #expect(t.jobs[1].id == "1", "rows are numbered in file order")
    }

    /// A `speedup` curve: rates at some GPU counts, interpolated between them, flat above the largest, in
    /// proportion below the smallest; `--elastic` then asks for no more than the size where the job runs
    /// fastest.
    @Test func aSpeedupCurveSetsTheRateAtEachSizeAndCapsTheElasticRange() throws {
        var t = try Trace.parse(
            """
            id,submit_time,duration,gpus,speedup
            c,0,3600,4,2:0.6|4:1|8:1.5|16:1.2
            l,0,3600,4,
            """
        )
        let c = t.jobs[0]
        #expect(c.scaling.map(\.gpus) == [2, 4, 8, 16])
        for (n, rate) in [(1, 0.3), (6, 1.25), (12, 1.35), (32, 1.2)] {
            #expect(abs(c.throughput(n) - rate) < 1e-9, "\(n) GPUs: \(c.throughput(n))")
        }
        t.makeElastic(factor: 4)
        #expect(t.jobs[0].elastic == TraceJob.Elastic(fewest: 1, most: 8), "the fastest size within 1-16")
        #expect(t.jobs[1].elastic == TraceJob.Elastic(fewest: 1, most: 16), "linear without a curve")
        #expect(t.jobs[0].speedUp(on: 8) == 1.5 && t.jobs[0].speedUp(on: 2) == 0.6)
        // The scheduler is told the work at its fewest GPUs, by the curve.
        var e = try Trace.parse("id,submit_time,duration,gpus,estimate,speedup\nc,0,3600,4,3600,2:0.5|4:1\n")
        e.makeElastic(factor: 2)
        #expect(e.jobs[0].spec.gpus == 2 && e.jobs[0].spec.maxGPUs == 4 && e.jobs[0].spec.estimate == 7200)
    }

    @Test(arguments: [
        ("submit_time,duration,gpus\n0,10,zero\n", 2, "gpus"),
        ("submit_time,duration,gpus\n0,10,1\nyesterday,10,1\n", 3, "submit_time"),
        ("submit_time,duration,gpus\n0,-5,1\n", 2, "duration"),
        ("submit_time,duration,gpus,kind\n0,5,1,serving\n", 2, "kind"),
        ("submit_time,duration,gpus,walltime\n0,5,1,0\n", 2, "walltime"),
        ("submit_time,gpus\n0,1\n", 1, "duration"),
        ("submit_time,duration,gpus\n0,10,1.5\n", 2, "gpus"),
        ("submit_time,duration,gpus,gpu_milli\n0,10,2,500\n", 2, "gpu_milli"),
        ("submit_time,duration,gpus,memory_mib\n0,10,1,lots\n", 2, "memory_mib"),
        ("submit_time,duration,gpus,speeds\n0,10,1,A100=0\n", 2, "speeds"),
        ("submit_time,duration,gpus,speedup\n0,10,4,2:1|1:0.5\n", 2, "speedup"),
        ("submit_time,duration,gpus,speedup\n0,10,4,4:fast\n", 2, "speedup"),
        ("submit_time,duration,gpus,speeds,kind\n0,10,1,A100=2,inference\n", 2, "speeds"),
    ])
    func badRowsNameTheirRowAndColumn(_ text: String, _ line: Int, _ column: String) {
        do {
            _ = try Trace.parse(text, file: "t.csv")
            Issue.record("accepted a bad trace")
        } catch {
            #expect(error.line == line)
            #expect(error.column == column)
            #expect(error.description.hasPrefix("t.csv:\(line): column \(column): "))
        }
    }
}
