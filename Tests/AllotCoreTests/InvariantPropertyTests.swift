import PropertyBased
import Testing

@testable import AllotCore

/// Drives the core with a sequence of pseudo-random operations, as the daemon would, and records every
/// event it applied.
struct Driver {
    var state = ClusterState.mixed()
    var log: [Event] = []
    var time = 0.0
    var policy: Scheduler.Policy
    var decisions: [Decision] = []

    init(policy: Scheduler.Policy) {
        self.policy = policy
        // The mixed fixture's own setup, as events, so a replay can start from an empty state.
        log = ClusterState.setupEvents(of: state)
    }

    mutating func apply(_ e: Event) {
        do {
            try state.apply(e)
            log.append(e)
        } catch {
            // Refused events are part of the property: they must leave the state alone, checked by replay.
        }
    }

    mutating func step(_ op: Int) {
        time += Double(op % 7) * 13
        let now = Instant(seconds: time)
        let active = state.activeJobs.sorted()
        let pending = state.pendingJobs.ids.sorted()
        switch op % 11 {
        case 0, 1, 2:
            var spec = JobSpec(
                tenant: "t\(op % 3)",
                kind: op % 4 == 0 ? .inference : .training,
                gpus: 1 + (op / 11) % 18
            )
            spec.topology = [.any, .any, .singleNode, .nvlink][(op / 7) % 4]
            if op % 13 == 0 { spec.gpuModels = ["A100"] }
            if op % 17 == 0 { spec.minGPUMemoryGiB = 40 }
            if op % 19 == 0 { spec.maxCostUSD = 1 }
            // Some wait for an earlier job, or are one at a time per name.
            if op % 5 == 0 && state.nextJobID.rawValue > 1 {
                let kind = Dependency.Kind.allCases[(op / 5) % Dependency.Kind.allCases.count]
                let on = JobID(1 + UInt64(op / 3) % (state.nextJobID.rawValue - 1))
                spec.name = "n\(op % 2)"
                spec.dependencies = [kind == .singleton ? Dependency(.singleton) : Dependency(kind, [on])]
            }
            if op % 29 == 0 {
                // A small job array, at most one or two tasks at once.
                let first = state.nextJobID
                for k in 0..<3 {
                    var task = spec
                    task.array = ArrayTask(array: first, index: k, limit: 1 + op % 2)
                    apply(Event(time: now, .jobSubmitted(id: state.nextJobID, spec: task, held: k == 1 && op % 2 == 0)))
                }
                if op % 2 == 0 { apply(Event(time: now, .jobReleased(id: JobID(first.rawValue + 1)))) }
            } else {
                apply(Event(time: now, .jobSubmitted(id: state.nextJobID, spec: spec, held: op % 23 == 0)))
            }
        case 3, 4:
            let pass = Scheduler(policy: policy).schedule(state, at: now)
            decisions.append(contentsOf: pass.decisions)
            for e in pass.events(at: now) { apply(e) }
        case 5:
            if !active.isEmpty {
                apply(Event(time: now, .jobFinished(id: active[op % active.count], exit: .exited(code: Int32(op % 3)))))
            }
        case 6:
            if !active.isEmpty, let by = pending.first {
                apply(Event(time: now, .jobPreempted(id: active[op % active.count], by: by, grace: 5)))
            }
        case 7:
            let all = state.jobs.keys.sorted()
            if !all.isEmpty { apply(Event(time: now, .jobCancelled(id: all[op % all.count], by: nil, grace: 1))) }
        case 8:
            let node = state.nodes[op % state.nodes.count].name
            let states: [NodeState] = [.up, .draining, .down, .up]
            apply(Event(time: now, .nodeStateChanged(name: node, state: states[(op / 11) % 4], reason: nil)))
        case 9:
            let node = state.nodes[op % state.nodes.count]
            let gpu = (op / 11) % node.spec.gpus
            apply(
                Event(
                    time: now,
                    .gpuHealthChanged(
                        node: node.name,
                        gpu: gpu,
                        health: op % 2 == 0 ? .unhealthy : .healthy,
                        reason: "test"
                    )
                )
            )
        default:
            if !active.isEmpty {
                apply(Event(time: now, .jobRequeued(id: active[op % active.count], reason: "node lost")))
            }
            if !pending.isEmpty { apply(Event(time: now, .jobHeld(id: pending[op % pending.count]))) }
        }
    }
}

extension ClusterState {
    /// Events that rebuild a jobless state's config and nodes.
    static func setupEvents(of s: ClusterState) -> [Event] {
        [Event(time: .zero, .configApplied(config: s.config))]
            + s.nodes.map { Event(time: .zero, .nodeAdded(spec: $0.spec)) }
    }
}

@Suite struct InvariantPropertyTests {
    static let ops = Gen.int(in: 0...9_999).array(of: 20...300)

    @Test(arguments: Scheduler.Policy.allCases)
    func noGPUIsEverGivenTwiceAndTheSetsStayConsistent(policy: Scheduler.Policy) async {
        await propertyCheck(count: 60, input: Self.ops) { ops in
            var d = Driver(policy: policy)
            for op in ops {
                d.step(op)
                let broken = d.state.invariantViolations()
                #expect(broken.isEmpty, "after op \(op): \(broken)")
                if !broken.isEmpty { return }
            }
        }
    }

    @Test(arguments: Scheduler.Policy.allCases)
    func gangsAreWholeAndConstraintsHonoured(policy: Scheduler.Policy) async {
        await propertyCheck(count: 60, input: Self.ops) { ops in
            var d = Driver(policy: policy)
            for op in ops { d.step(op) }
            for decision in d.decisions {
                guard case .start(let id, let a, let note, _) = decision else { continue }
                let spec = d.state.jobs[id]!.spec
                #expect(a.gpuCount == spec.gpus)
                #expect(Set(a.slices.map(\.node)).count == a.slices.count)
                let model = d.state.config.model(named: a.model)!
                #expect(note.model == a.model)
                if !spec.gpuModels.isEmpty { #expect(spec.gpuModels.contains(a.model)) }
                if let m = spec.minGPUMemoryGiB { #expect(model.memoryGiB >= m) }
                if let c = spec.maxCostUSD { #expect(note.estimatedCostUSD <= c) }
                if spec.topology != .any { #expect(a.slices.count == 1) }
            }
        }
    }

    @Test func replayingTheLogRebuildsTheSameState() async {
        await propertyCheck(count: 60, input: Self.ops) { ops in
            var d = Driver(policy: .allot)
            for op in ops { d.step(op) }
            var replayed = ClusterState()
            do { try replayed.apply(d.log) } catch {
                Issue.record("replay refused an event the live state took: \(error)")
                return
            }
            #expect(replayed == d.state)
        }
    }

    @Test func sameOperationsGiveTheSameEvents() async {
        await propertyCheck(count: 40, input: Self.ops) { ops in
            var a = Driver(policy: .allot)
            var b = Driver(policy: .allot)
            for op in ops {
                a.step(op)
                b.step(op)
            }
            #expect(a.log == b.log)
            #expect(a.state == b.state)
        }
    }

    @Test func noPendingJobIsEverLost() async {
        await propertyCheck(count: 60, input: Self.ops) { ops in
            var d = Driver(policy: .allot)
            for op in ops { d.step(op) }
            let submitted = d.log.compactMap { e -> JobID? in
                if case .jobSubmitted(let id, _, _) = e.body { return id }
                return nil
            }
            #expect(Set(submitted) == Set(d.state.jobs.keys))
            let pass = Scheduler().schedule(d.state, at: d.state.now)
            let started = pass.decisions.compactMap { if case .start(let id, _, _, _) = $0 { id } else { nil } }
            let covered = Set(started).union(pass.pending.map(\.id))
            #expect(covered == d.state.pendingJobs.ids)
        }
    }
}
