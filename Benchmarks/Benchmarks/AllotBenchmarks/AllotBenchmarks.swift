import AllotConfig
import AllotCore
import AllotSim
import Benchmark
import Foundation

/// A pool of `nodes` × 8 GPUs in four models, with some GPUs busy so that the free space is fragmented.
func loadedPool(nodes: Int, pending: Int, seed: UInt64) -> ClusterState {
    let models = [
        GPUModel(name: "H100", memoryGiB: 80, pricePerHour: 4, speed: 2),
        GPUModel(name: "A100", memoryGiB: 80, pricePerHour: 2, speed: 1),
        GPUModel(name: "L40S", memoryGiB: 48, pricePerHour: 1, speed: 0.6),
        GPUModel(name: "L4", memoryGiB: 24, pricePerHour: 0.6, speed: 0.35),
    ]
    var state = ClusterState()
    var events = [Event(time: .zero, .configApplied(config: PoolConfig(gpuModels: models)))]
    for i in 0..<nodes {
        let model = models[i % models.count].name
        events.append(
            Event(
                time: .zero,
                .nodeAdded(
                    spec: NodeSpec(
                        name: "n\(i)",
                        gpuModel: model,
                        gpus: 8,
                        nvlinkIslands: [[0, 1, 2, 3], [4, 5, 6, 7]]
                    )
                )
            )
        )
    }
    try! state.apply(events)
    var rng = seed
    func next() -> UInt64 {
        rng &+= 0x9E37_79B9_7F4A_7C15
        var z = rng
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    // Fill about 60% of the pool with running jobs of mixed sizes, then queue the pending ones.
    var t = 0.0
    func spec(_ n: UInt64) -> JobSpec {
        let inference = n % 4 == 0
        var s = JobSpec(
            tenant: "t\(n % 7)",
            kind: inference ? .inference : .training,
            gpus: inference ? 1 : [1, 1, 2, 4, 8, 16, 32][Int(n % 7)]
        )
        s.topology = s.gpus == 8 && n % 3 == 0 ? .nvlink : (s.gpus <= 8 && n % 5 == 0 ? .singleNode : .any)
        if n % 11 == 0 { s.gpuModels = ["A100", "H100"] }
        if n % 13 == 0 { s.minGPUMemoryGiB = 40 }
        s.estimate = Double(600 + n % 36_000)
        return s
    }
    while state.gpusInUse < nodes * 8 * 6 / 10 {
        t += 1
        try! state.apply(
            Event(time: Instant(seconds: t), .jobSubmitted(id: state.nextJobID, spec: spec(next()), held: false))
        )
        try! state.apply(Scheduler().schedule(state, at: Instant(seconds: t)).events(at: Instant(seconds: t)))
    }
    for _ in 0..<pending {
        t += 0.01
        try! state.apply(
            Event(time: Instant(seconds: t), .jobSubmitted(id: state.nextJobID, spec: spec(next()), held: false))
        )
    }
    return state
}

let pool10k = loadedPool(nodes: 1024, pending: 10_000, seed: 1)
let pool100k = loadedPool(nodes: 1024, pending: 100_000, seed: 2)

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

    Benchmark("Scheduling pass (fifo): 1,024×8 GPUs, 100,000 pending") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(Scheduler(policy: .fifo).schedule(pool100k, at: pool100k.now))
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
