@testable import AllotCore

extension GPUModel {
    static let h100 = GPUModel(name: "H100", memoryGiB: 80, pricePerHour: 4.0, speed: 2.0)
    static let a100 = GPUModel(name: "A100", memoryGiB: 80, pricePerHour: 2.0, speed: 1.0)
    static let l4 = GPUModel(name: "L4", memoryGiB: 24, pricePerHour: 0.6, speed: 0.35)
}

extension ClusterState {
    /// A pool with the given nodes: (name, model, gpus, islands).
    static func fixture(
        models: [GPUModel] = [.h100, .a100, .l4],
        nodes: [(String, String, Int, [[Int]])],
        settings: SchedulerSettings = SchedulerSettings(),
        tenants: [Tenant] = [],
        tweak: (inout PoolConfig) -> Void = { _ in }
    ) -> ClusterState {
        var config = PoolConfig(gpuModels: models, tenants: tenants)
        config.scheduler = settings
        tweak(&config)
        var s = ClusterState()
        try! s.apply(Event(time: .zero, .configApplied(config: config)))
        for (name, model, gpus, islands) in nodes {
            try! s.apply(
                Event(
                    time: .zero,
                    .nodeAdded(spec: NodeSpec(name: name, gpuModel: model, gpus: gpus, nvlinkIslands: islands))
                )
            )
        }
        return s
    }

    /// The example mixed pool: 2 H100×8 (two islands of 4), 2 A100×8, 4 L4×4.
    static func mixed() -> ClusterState {
        fixture(nodes: [
            ("h100-1", "H100", 8, [[0, 1, 2, 3], [4, 5, 6, 7]]),
            ("h100-2", "H100", 8, [[0, 1, 2, 3], [4, 5, 6, 7]]),
            ("a100-1", "A100", 8, []),
            ("a100-2", "A100", 8, []),
            ("l4-1", "L4", 4, []), ("l4-2", "L4", 4, []), ("l4-3", "L4", 4, []), ("l4-4", "L4", 4, []),
        ])
    }

    /// Submits a job and returns its id.
    @discardableResult
    mutating func submit(_ spec: JobSpec, at t: Double = 0, held: Bool = false) -> JobID {
        let id = nextJobID
        try! apply(Event(time: Instant(seconds: t), .jobSubmitted(id: id, spec: spec, held: held)))
        return id
    }

    /// Runs a pass at `t` and applies its decisions.
    @discardableResult
    mutating func schedule(
        at t: Double = 0,
        policy: Scheduler.Policy = .allot,
        lending: Scheduler.Lending = .forecast
    ) -> SchedulingPass {
        let pass = Scheduler(policy: policy, lending: lending).schedule(self, at: Instant(seconds: t))
        try! apply(pass.events(at: Instant(seconds: t)))
        return pass
    }

    /// Applies a pass's decisions at `t`, and lets every job told to stop exit at once.
    @discardableResult
    mutating func scheduleAndSettle(at t: Double, policy: Scheduler.Policy = .allot) -> SchedulingPass {
        let pass = schedule(at: t, policy: policy)
        for d in pass.decisions {
            if case .preempt(let id, _, _, _) = d { finish(id, code: 143, at: t) }
        }
        return pass
    }

    func starts(_ pass: SchedulingPass) -> [JobID] {
        pass.decisions.compactMap { if case .start(let id, _, _, _) = $0 { id } else { nil } }
    }

    func preemptions(_ pass: SchedulingPass) -> [(victim: JobID, by: JobID, reason: PreemptionReason)] {
        pass.decisions.compactMap { if case .preempt(let v, let by, _, let r) = $0 { (v, by, r) } else { nil } }
    }

    mutating func finish(_ id: JobID, code: Int32 = 0, at t: Double) {
        try! apply(Event(time: Instant(seconds: t), .jobFinished(id: id, exit: .exited(code: code))))
    }
}

extension JobSpec {
    static func training(
        _ gpus: Int,
        tenant: String = "t",
        estimate: Double? = nil,
        _ tweak: (inout JobSpec) -> Void = { _ in }
    ) -> JobSpec {
        var s = JobSpec(name: "train", tenant: tenant, kind: .training, gpus: gpus, estimate: estimate)
        tweak(&s)
        return s
    }

    static func inference(_ gpus: Int, tenant: String = "t", _ tweak: (inout JobSpec) -> Void = { _ in }) -> JobSpec {
        var s = JobSpec(name: "serve", tenant: tenant, kind: .inference, gpus: gpus)
        tweak(&s)
        return s
    }
}
