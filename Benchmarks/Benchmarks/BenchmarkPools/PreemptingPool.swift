import AllotCore

/// What the inference jobs of a ``preemptingPool`` lack.
public enum PreemptingShortage: Sendable {
    /// Every GPU busy; nodes of 64 CPUs, 56 taken; each inference job asks 1 GPU and 4 CPUs.
    case gpus
    /// Half the GPUs busy and 60 of 64 CPUs taken on every node; each inference job asks 1 GPU and 8 CPUs.
    case cpus
    /// Every GPU busy, no CPUs declared; each inference job asks 2 GPUs on one node.
    case singleNode
}

/// A pool where 1,000 pending inference jobs can start only by preempting preemptible 1-GPU training, on
/// `nodes` × 8 L4s.
public func preemptingPool(nodes: Int, short: PreemptingShortage) -> ClusterState {
    let host = short != .singleNode
    var state = ClusterState()
    var events = [
        Event(
            time: .zero,
            .configApplied(
                config: PoolConfig(gpuModels: [GPUModel(name: "L4", memoryGiB: 24, pricePerHour: 0.6, speed: 0.35)])
            )
        )
    ]
    for i in 0..<nodes {
        let spec =
            host
            ? NodeSpec(name: "n\(i)", gpuModel: "L4", gpus: 8, cpus: 64, memoryGiB: 512)
            : NodeSpec(name: "n\(i)", gpuModel: "L4", gpus: 8)
        events.append(Event(time: .zero, .nodeAdded(spec: spec)))
    }
    try! state.apply(events)
    let (perNode, cpus) = short == .cpus ? (4, 15) : (8, 7)
    var t = 0.0
    for _ in 0..<perNode {
        for _ in 0..<nodes {
            t += 0.001
            let spec = JobSpec(
                gpus: 1,
                cpuMilli: host ? cpus * 1000 : nil,
                estimate: 86_400,
                preemptible: true
            )
            try! state.apply(
                Event(time: Instant(seconds: t), .jobSubmitted(id: state.nextJobID, spec: spec, held: false))
            )
        }
        try! state.apply(Scheduler().schedule(state, at: Instant(seconds: t)).events(at: Instant(seconds: t)))
    }
    for _ in 0..<1000 {
        t += 0.001
        let spec = JobSpec(
            kind: .inference,
            gpus: short == .singleNode ? 2 : 1,
            cpuMilli: short == .gpus ? 4000 : short == .cpus ? 8000 : nil,
            topology: short == .singleNode ? .singleNode : .any
        )
        try! state.apply(Event(time: Instant(seconds: t), .jobSubmitted(id: state.nextJobID, spec: spec, held: false)))
    }
    return state
}

/// When to schedule a ``preemptingPool``: past its running jobs' minimum run time.
public func preemptionTime(_ state: ClusterState) -> Instant {
    Instant(seconds: state.now.seconds + 10_000)
}
