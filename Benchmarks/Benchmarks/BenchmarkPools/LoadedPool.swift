import AllotCore

/// A pool of `nodes` × 8 GPUs in four models, with some GPUs busy so that the free space is fragmented.
/// `selecting`: every tenth pending job selects nodes (one of four selections: a node list, an exclusion, a
/// label, two labels), as Slurm's -w, -x and -C do.
public func loadedPool(nodes: Int, pending: Int, seed: UInt64, selecting: Bool = false) -> ClusterState {
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
                        nvlinkIslands: [[0, 1, 2, 3], [4, 5, 6, 7]],
                        labels: ["rack": "r\(i % 8)", "ib": i % 3 == 0 ? "true" : "false"]
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
    let selections = [
        NodeSelection(nodes: (0..<min(nodes, 64)).map { "n\($0 * 7 % nodes)" }),
        NodeSelection(exclude: (0..<min(nodes, 256)).map { "n\($0)" }),
        NodeSelection(constraint: "ib"),
        NodeSelection(constraint: "rack=r1|rack=r2&ib"),
    ]
    for k in 0..<pending {
        t += 0.01
        var s = spec(next())
        if selecting && k % 10 == 0 { s.nodes = selections[(k / 10) % selections.count] }
        try! state.apply(Event(time: Instant(seconds: t), .jobSubmitted(id: state.nextJobID, spec: s, held: false)))
    }
    return state
}
