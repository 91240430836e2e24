import AllotConfig
import AllotCore
import AllotProtocol
import AllotSim
import Foundation

/// `simulate --from-live`: the daemon's pool and queue as a simulation.
enum LiveWhatIf {
    /// Fetches the daemon's state and turns it into a pool and a trace that starts now: every running,
    /// stopping and pending job (held ones stay out), running ones first so that they keep their place,
    /// each expected to run for its estimate (its walltime, else the pool's default) — running ones for
    /// what is left of it.
    /// - Parameter config: another pool to try the queue on, instead of the live one.
    static func load(connection: ConnectionOptions, config: String?) throws -> (ClusterState, Trace) {
        var live: ClusterState?
        try talking {
            let client = try connection.connect()
            live = try client.call(Methods.snapshot, NoParams())
        }
        guard let live else { throw fail("no state from allotd", code: Exit.refused) }
        let state: ClusterState
        if let config {
            state = try ConfigFile.load(path: config).makeState()
        } else {
            var s = ClusterState(config: live.config)
            var events = live.nodes.map { Event(time: .zero, .nodeAdded(spec: $0.spec)) }
            for n in live.nodes where n.state != .up && n.state != .draining {
                events.append(
                    Event(time: .zero, .nodeStateChanged(name: n.name, state: n.state, reason: n.stateReason))
                )
            }
            try s.apply(events)
            state = s
        }
        let now = live.now
        var running: [TraceJob] = []
        var pending: [TraceJob] = []
        for job in live.jobs where job.state == .running || job.state == .stopping || job.state == .pending {
            let spec = job.spec
            let estimate = spec.estimate ?? spec.walltime ?? live.config.scheduler.defaultEstimate
            var left = estimate
            if job.state.holdsGPUs, let start = job.startTime, let a = job.allocation {
                let speed = spec.kind == .training ? (live.config.model(named: a.model).map(spec.speed(on:)) ?? 1) : 1
                left = max(60, estimate - max(0, now - start) * speed)
            }
            let t = TraceJob(
                id: job.id.description,
                name: spec.name,
                kind: spec.kind,
                tenant: spec.tenant,
                gpus: spec.gpus,
                gpuShare: spec.gpuShare,
                cpuMilli: spec.cpuMilli,
                memoryMiB: spec.memoryMiB,
                gpuModels: job.state.holdsGPUs ? [job.allocation?.model].compactMap { $0 } : spec.gpuModels,
                minGPUMemoryGiB: spec.minGPUMemoryGiB,
                topology: spec.topology,
                priorityClass: spec.priorityClass,
                submitTime: 0,
                duration: left,
                walltime: spec.walltime.map { w in
                    job.state.holdsGPUs ? max(60, w - max(0, now - (job.startTime ?? now))) : w
                },
                estimate: left,
                speeds: spec.kind == .training ? spec.speeds : [:]
            )
            if job.state.holdsGPUs { running.append(t) } else { pending.append(t) }
        }
        return (state, Trace(jobs: running + pending))
    }
}
