import AllotConfig
import AllotCore
import AllotSim
import Benchmark
import BenchmarkPools
import Foundation

let pool10k = loadedPool(nodes: 1024, pending: 10_000, seed: 1)
let pool100k = loadedPool(nodes: 1024, pending: 100_000, seed: 2)
let pool100kSelecting = loadedPool(nodes: 1024, pending: 100_000, seed: 2, selecting: true)
let preempting: [(name: String, state: ClusterState)] = [
    ("every GPU busy, 1-GPU inference asking CPUs", preemptingPool(nodes: 1250, short: .gpus)),
    ("GPUs free, CPUs taken", preemptingPool(nodes: 1250, short: .cpus)),
    ("every GPU busy, 2-GPU inference on one node", preemptingPool(nodes: 1250, short: .singleNode)),
]

/// ../shared/data/traces/philly, when this checkout sits next to it.
let phillyTrace = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("shared/data/traces/philly/philly_pollux_sia.csv").path
let phillyPool = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("pools/philly-1024.toml").path

let benchmarks: @Sendable () -> Void = {
    walBenchmarks()
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .peakMemoryResident],
        warmupIterations: 1,
        scalingFactor: .one,
        maxDuration: .seconds(10),
        maxIterations: 30
    )

    Benchmark("Scheduling pass: 1,024×8 GPUs, 10,000 pending") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(Scheduler().schedule(pool10k, at: pool10k.now))
        }
    }

    Benchmark("Scheduling pass: 1,024×8 GPUs, 100,000 pending") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(Scheduler().schedule(pool100k, at: pool100k.now))
        }
    }

    Benchmark("Scheduling pass: 1,024×8 GPUs, 100,000 pending, a tenth selecting nodes") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(Scheduler().schedule(pool100kSelecting, at: pool100kSelecting.now))
        }
    }

    Benchmark("Scheduling pass (fifo): 1,024×8 GPUs, 100,000 pending") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(Scheduler(policy: .fifo).schedule(pool100k, at: pool100k.now))
        }
    }

    for p in preempting {
        Benchmark("Preempting pass: 1,250×8 GPUs, 1,000 inference pending, \(p.name)") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(Scheduler().schedule(p.state, at: preemptionTime(p.state)))
            }
        }
    }

    if FileManager.default.fileExists(atPath: phillyTrace) {
        Benchmark(
            "Simulate Philly (82k jobs) on 1,024 GPUs",
            configuration: .init(
                metrics: [.wallClock, .peakMemoryResident],
                warmupIterations: 0,
                maxDuration: .seconds(60),
                maxIterations: 3
            )
        ) { benchmark in
            let trace = try! Trace.load(path: phillyTrace)
            let state = try! ConfigFile.load(path: phillyPool).makeState()
            benchmark.startMeasurement()
            blackHole(try! Simulator().run(trace, on: state))
            benchmark.stopMeasurement()
        }
    }
}
