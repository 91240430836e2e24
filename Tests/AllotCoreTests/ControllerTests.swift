import Testing

@testable import AllotCore

/// The controller's rules, driven as allotd drives it: inputs at clock readings, events and effects out.
@Suite struct ControllerTests {
    static func pool() -> Controller {
        var c = Controller(state: .fixture(nodes: [("n1", "H100", 4, []), ("n2", "H100", 4, [])]))
        _ = c.step(.runner(node: "n1", .local), at: at(0))
        _ = c.step(.runner(node: "n2", .local), at: at(0))
        return c
    }

    /// A reading whose wall clock is `wall` and whose monotonic clock is `mono` (the same by default).
    static func at(_ wall: Double, mono: Double? = nil) -> ClockReading {
        ClockReading(wall: Instant(seconds: 1_000_000 + wall), mono: mono ?? wall)
    }

    /// Submits (as allotd records a request) and runs a pass.
    static func submitAndStart(_ c: inout Controller, _ spec: JobSpec, at t: Double) -> (JobID, Controller.Output) {
        let id = c.state.nextJobID
        _ = c.step(.record([.jobSubmitted(id: id, spec: spec, held: false)]), at: at(t))
        return (id, c.step(.pass, at: at(t)))
    }

    @Test func aPassStartsJobsAsEffectsBehindItsEvents() {
        var c = Self.pool()
        let (id, out) = Self.submitAndStart(&c, .training(2), at: 1)
        #expect(out.events.map(\.kindName) == ["jobStarted"])
        #expect(out.effects == [.start(id, run: 1), .notify(id, "started")])
        #expect(c.state.jobs[id]?.state == .running)
    }

    /// Before the controller, a GPU failure stopped its job without an event: after a restart the job's end
    /// was a plain failure although `on_gpu_failure = "requeue"`.
    @Test func aGPUFailureIsAnEventSoARestartStillRequeuesTheJob() throws {
        var c = Self.pool()
        let (id, _) = Self.submitAndStart(&c, .training(1) { $0.grace = 60 }, at: 1)
        let node = try #require(c.state.jobs[id]?.allocation?.slices.first)
        var log: [Event] = []
        let out = c.step(
            .gpuHealth(
                node: node.node,
                gpus: [Controller.GPUReport(index: node.gpus[0], health: .unhealthy, reason: "Xid 79")]
            ),
            at: Self.at(5)
        )
        log += out.events
        #expect(out.events.map(\.kindName) == ["gpuHealthChanged", "jobGPUFailed"])
        // Its grace is capped at 30 s, and the runner is told so.
        #expect(
            out.effects.contains { if case .stop(id, 1, 30, let why) = $0 { why.contains("Xid 79") } else { false } }
        )
        // allotd restarts: the state is rebuilt from the log alone.
        var before = ClusterState.fixture(nodes: [("n1", "H100", 4, []), ("n2", "H100", 4, [])])
        try before.apply(
            [
                Event(time: Self.at(1).wall, .jobSubmitted(id: id, spec: .training(1) { $0.grace = 60 }, held: false))
            ]
                + (c.state.jobs[id].map { job in
                    [Event(time: Self.at(1).wall, .jobStarted(id: id, allocation: job.allocation!))]
                } ?? []) + log
        )
        var restarted = Controller(state: before)
        _ = restarted.step(.runner(node: node.node, .local), at: Self.at(6, mono: 0))
        let end = restarted.step(
            .runEnded(Controller.RunEnd(id: id, run: 1, exit: .signaled(signal: 15))),
            at: Self.at(8, mono: 2)
        )
        #expect(end.events.map(\.kindName) == ["jobRequeued"])
        #expect(restarted.state.jobs[id]?.state == .pending)
        #expect(end.effects.contains(.notify(id, "requeued")))
        // With on_gpu_failure = "fail" it fails, naming the GPU.
        var failing = Controller(state: before)
        var rules = Controller.Settings()
        rules.onGPUFailure = .fail
        _ = failing.step(.settings(rules), at: Self.at(7))
        _ = failing.step(.runEnded(Controller.RunEnd(id: id, run: 1, exit: .signaled(signal: 15))), at: Self.at(8))
        #expect(failing.state.jobs[id]?.state == .failed)
        #expect(failing.state.jobs[id]?.note?.contains("Xid 79") == true)
    }

    @Test func walltimeIsMeasuredOnTheMonotonicClockSoAWallClockStepFiresNothing() {
        var c = Self.pool()
        let (id, _) = Self.submitAndStart(&c, .training(1) { $0.walltime = 3600 }, at: 0)
        // The first tick takes the deadline from the logged start; then the wall clock jumps a day ahead.
        #expect(c.step(.tick, at: Self.at(10, mono: 10)).events.isEmpty)
        let stepped = c.step(.tick, at: Self.at(86_400, mono: 11))
        #expect(!stepped.events.contains { $0.kindName == "jobTimedOut" })
        #expect(c.state.jobs[id]?.state == .running)
        // An hour on the monotonic clock later it is stopped, with its grace, and the runner is told.
        let due = c.step(.tick, at: Self.at(86_400 + 3590, mono: 3601))
        #expect(due.events.map(\.kindName) == ["jobTimedOut"])
        #expect(due.effects.contains { if case .stop(id, 1, _, _) = $0 { true } else { false } })
        #expect(c.state.jobs[id]?.state == .stopping)
    }

    @Test func aStoppedJobNobodyRunsIsTakenAsStoppedAfterItsGraceOnly() {
        var c = Controller(state: .fixture(nodes: [("far", "H100", 4, [])]))
        let (id, _) = Self.submitAndStart(&c, .training(1) { $0.grace = 20 }, at: 0)
        _ = c.step(.record([.jobCancelled(id: id, by: 1000, grace: 20)]), at: Self.at(5))
        // Nobody runs node "far": no stop effect, and the grace is waited for.
        #expect(c.step(.tick, at: Self.at(20)).events.isEmpty)
        let after = c.step(.tick, at: Self.at(26))
        #expect(after.events.map(\.kindName) == ["jobFinished"])
        #expect(c.state.jobs[id]?.state == .cancelled)
    }

    @Test func aLostNodesJobsAreRequeuedOrFailedPerOnNodeLoss() {
        var c = Self.pool()
        let (a, _) = Self.submitAndStart(&c, .training(4), at: 0)
        let (b, _) = Self.submitAndStart(&c, .inference(4), at: 0)
        let node = c.state.jobs[a]!.allocation!.slices[0].node
        let other = c.state.jobs[b]!.allocation!.slices[0].node
        #expect(node != other)
        _ = c.step(.nodeLost(node: node, reason: "agent lost"), at: Self.at(10))
        _ = c.step(.nodeLost(node: other, reason: "agent lost"), at: Self.at(10))
        // requeue-preemptible (the default): training goes back to the queue, inference fails.
        #expect(c.state.jobs[a]?.state == .pending)
        #expect(c.state.jobs[b]?.state == .failed)
    }

    /// Found by the fault simulation (seed 4): a job spanning a local node and an agent's node was requeued
    /// when the agent was lost, while its process ran on, on the local node, holding GPUs the pool then gave
    /// to others. It is stopped where it runs first, and settled when it has ended.
    @Test func aJobSpanningALostNodeIsStoppedWhereItRunsBeforeItIsRequeued() throws {
        var c = Controller(state: .fixture(nodes: [("here", "H100", 2, []), ("there", "H100", 2, [])]))
        _ = c.step(.runner(node: "here", .local), at: Self.at(0))
        _ = c.step(.runner(node: "there", .agent), at: Self.at(0))
        let (id, _) = Self.submitAndStart(&c, .training(4), at: 0)
        let slices = try #require(c.state.jobs[id]?.allocation?.slices)
        #expect(slices.count == 2)
        let lost = slices[1].node
        let out = c.step(.nodeLost(node: lost, reason: "agent lost"), at: Self.at(10))
        #expect(c.state.jobs[id]?.state == .stopping, "requeued while its process still runs on \(slices[0].node)")
        #expect(out.effects.contains { if case .stop(id, 1, _, _) = $0 { true } else { false } })
        // Its GPUs stay its own until its run ends; then it goes back to the queue.
        #expect(c.step(.pass, at: Self.at(11)).effects.isEmpty)
        _ = c.step(.runEnded(Controller.RunEnd(id: id, run: 1, exit: .signaled(signal: 15))), at: Self.at(12))
        #expect(c.state.jobs[id]?.state == .pending)
    }

    @Test func theSameInputsAtTheSameReadingsGiveTheSameOutputs() {
        func run() -> [Event] {
            var c = Self.pool()
            var events: [Event] = []
            for i in 0..<6 {
                let (_, out) = Self.submitAndStart(&c, i % 2 == 0 ? .training(1 + i % 3) : .inference(2), at: Double(i))
                events += out.events
            }
            events +=
                c.step(.gpuHealth(node: "n1", gpus: [.init(index: 0, health: .unhealthy, reason: "x")]), at: Self.at(9))
                .events
            events += c.step(.tick, at: Self.at(10)).events
            events += c.step(.pass, at: Self.at(11)).events
            return events
        }
        #expect(run() == run())
    }

    // MARK: Services

    static func service(_ name: String = "web", min: Int = 1, max: Int = 4) -> ServiceSpec {
        ServiceSpec(
            name: name,
            template: .inference(1) { $0.command = ["serve"] },
            minReplicas: min,
            maxReplicas: max,
            ready: Probe(kind: .http, target: "/")
        )
    }

    /// Replicas that end on their own are replaced after 1, 2, 4 … s; one that ran ten minutes starts the
    /// count afresh. The back-off is decided from the log's times, so a restart keeps it.
    @Test func aServiceKeepsItsReplicasAndBacksOffACrashLoop() throws {
        var c = Self.pool()
        let created = c.step(.record([.serviceCreated(spec: Self.service(), replicas: 2)]), at: Self.at(1))
        #expect(created.events.map(\.kindName) == ["serviceCreated", "jobSubmitted", "jobSubmitted"])
        let ids = try #require(c.state.services["web"]?.members)
        #expect(ids.count == 2 && ids.allSatisfy { c.state.jobs[$0]?.spec.service == "web" })
        _ = c.step(.pass, at: Self.at(1))
        #expect(ids.allSatisfy { c.state.jobs[$0]?.state == .running })
        // One crashes at once: no replacement before 1 s has passed.
        var t = 2.0
        var crashed = ids[0]
        var expected: [Double] = []
        for n in 1...4 {
            let out = c.step(.runEnded(.init(id: crashed, run: 1, exit: .exited(code: 3))), at: Self.at(t))
            #expect(!out.events.contains { $0.kindName == "jobSubmitted" }, "crash \(n)")
            let s = try #require(c.state.services["web"])
            #expect(s.crashes == n && s.lastCrash?.contains("exit code 3") == true)
            let due = try #require(s.restartAfter).seconds - Self.at(t).wall.seconds
            expected.append(due)
            #expect(c.step(.tick, at: Self.at(t + due - 0.01)).events.isEmpty)
            let replaced = c.step(.tick, at: Self.at(t + due))
            #expect(replaced.events.map(\.kindName) == ["jobSubmitted"])
            crashed = try #require(replaced.events.first?.body.jobID)
            _ = c.step(.pass, at: Self.at(t + due))
            t += due
        }
        #expect(expected == [1, 2, 4, 8])
        // Ten minutes of running, then a crash: back to 1 s.
        t += InferenceService.healthyRun
        _ = c.step(.runEnded(.init(id: crashed, run: 1, exit: .exited(code: 1))), at: Self.at(t))
        #expect(c.state.services["web"]?.crashes == 1)
        #expect(c.state.invariantViolations().isEmpty)
    }

    /// A step takes every move a rollout may take now: scaled down to one replica of a new version, the
    /// controller cancels an old serving replica and submits the new one in the same step, so that the pass
    /// which follows places it (found by the fault simulation: a replica submitted after a pass waited without
    /// a reason).
    @Test func aRolloutTakesEveryMoveItMayInOneStep() throws {
        var c = Self.pool()
        _ = c.step(.record([.serviceCreated(spec: Self.service(), replicas: 2)]), at: Self.at(1))
        _ = c.step(.pass, at: Self.at(1))
        let old = try #require(c.state.services["web"]?.members)
        for id in old { _ = c.step(.replicaReady(id, true), at: Self.at(2)) }
        var v2 = Self.service()
        v2.template.command = ["serve", "v2"]
        let out = c.step(.record([.serviceUpdated(spec: v2, replicas: 1, by: 0)]), at: Self.at(3))
        #expect(out.events.map(\.kindName) == ["serviceUpdated", "jobCancelled", "jobSubmitted"])
        let new = try #require(c.state.services["web"]?.members.first { !old.contains($0) })
        #expect(c.state.jobs[new]?.spec.command == ["serve", "v2"])
        _ = c.step(.pass, at: Self.at(3))
        #expect(c.state.jobs[new]?.state == .running)
        #expect(c.state.invariantViolations().isEmpty)
    }

    @Test func scalingDownCancelsWaitingReplicasFirstThenTheNewest() throws {
        var c = Self.pool()
        // Eight GPUs: four replicas of 2 run, the fifth waits.
        var spec = Self.service(max: 8)
        spec.template.gpus = 2
        _ = c.step(.record([.serviceCreated(spec: spec, replicas: 5)]), at: Self.at(1))
        _ = c.step(.pass, at: Self.at(1))
        let members = try #require(c.state.services["web"]?.members)
        #expect(members.filter { c.state.jobs[$0]?.state == .running }.count == 4)
        let out = c.step(
            .record([.serviceScaled(name: "web", replicas: 3, minReplicas: 1, maxReplicas: 8, reason: "test")]),
            at: Self.at(2)
        )
        let cancelled = out.events.compactMap { e -> JobID? in
            if case .jobCancelled(let id, nil, _) = e.body { id } else { nil }
        }
        #expect(cancelled == [members[4], members[3]])
        #expect(c.state.jobs[members[4]]?.state == .cancelled && c.state.jobs[members[3]]?.state == .stopping)
        // While the stopping one stops, nothing more is cancelled and nothing is submitted.
        #expect(
            c.step(.tick, at: Self.at(3)).events.allSatisfy {
                $0.kindName != "jobCancelled" && $0.kindName != "jobSubmitted"
            }
        )
        _ = c.step(.runEnded(.init(id: members[3], run: 1, exit: .signaled(signal: 15))), at: Self.at(4))
        let s = try #require(c.state.services["web"])
        #expect(s.members == Array(members.prefix(3)) && s.crashes == 0)
        // Deleted: every replica cancelled, then the service gone, in one step.
        let del = c.step(.deleteService("web", by: 0), at: Self.at(5))
        #expect(del.events.map(\.kindName) == ["jobCancelled", "jobCancelled", "jobCancelled", "serviceDeleted"])
        #expect(c.state.services.isEmpty && c.state.invariantViolations().isEmpty)
    }

    /// Knative's autoscaler's rules: the stable window's mean over the target; a burst of twice the size in
    /// the panic window scales up at once and holds for a window; zero after no load for `zero-after`.
    @Test func theAutoscalerFollowsTheLoadWithABurstWindowAndGoesToZero() throws {
        var c = Self.pool()
        var spec = Self.service(max: 8)
        spec.minReplicas = 0
        var a = Autoscale(target: 2)
        a.zeroAfter = 120
        spec.autoscale = a
        _ = c.step(.record([.serviceCreated(spec: spec, replicas: 2)]), at: Self.at(0))
        func load(_ v: Double, from: Double, to: Double) {
            for t in stride(from: from, through: to, by: 2) {
                _ = c.step(.serviceLoad("web", v), at: Self.at(t))
                _ = c.step(.tick, at: Self.at(t))
            }
        }
        var replicas: Int { c.state.services["web"]!.replicas }
        var reason: String { c.state.services["web"]!.scaleReason }
        // A steady 3 in flight: 2 replicas of 2 stay.
        load(3, from: 1, to: 59)
        #expect(replicas == 2 && reason == "created")
        // A burst of 12: 6 replicas within the panic window (6 s).
        load(12, from: 61, to: 67)
        #expect(replicas == 6 && reason.contains("a burst"), "\(reason)")
        // It passes, but nothing scales down for a window after it.
        load(1, from: 69, to: 121)
        #expect(replicas == 6)
        load(1, from: 123, to: 189)
        #expect(replicas == 1 && reason.contains(" to 1: "), "\(reason)")
        #expect(reason.hasSuffix("requests in flight over 1m, target 2 per replica"), "\(reason)")
        // No load: one replica stays until zero-after (2 min) has passed since the last request.
        load(0, from: 191, to: 307)
        #expect(replicas == 1)
        load(0, from: 309, to: 311)
        #expect(replicas == 0 && reason.contains("no load for"), "\(reason)")
        // Demand at zero brings one back on the next tick.
        load(1, from: 313, to: 313)
        #expect(replicas == 1)
        #expect(c.state.invariantViolations().isEmpty)
    }
}
