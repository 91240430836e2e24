import Testing

@testable import AllotCore

/// `--nodelist`, `--exclude` and `--constraint`: the texts, and every placement path honouring them.
@Suite struct NodeSelectionTests {
    @Test func hostlistsExpandAndFold() throws {
        guard case .success(let names) = Hostlist.expand("gpu[01-03,07],big1, gpu02") else {
            Issue.record("not expanded")
            return
        }
        #expect(names == ["gpu01", "gpu02", "gpu03", "gpu07", "big1"])
        #expect(Hostlist.compress(names) == "gpu[01-03,07],big1")
        #expect(Hostlist.compress(["a1"]) == "a1")
        for bad in ["gpu[01-", "gpu[3-1]", "gpu[a-b]", "gpu[1-2][3]", "gpu]1[", "two words", "n[0-99999]"] {
            if case .success(let n) = Hostlist.expand(bad) { Issue.record("\(bad) read as \(n)") }
        }
    }

    @Test func labelConstraintsReadAndJudge() throws {
        guard case .success(let c) = LabelConstraint.parse(" ib & zone=a | nvme&!slow | rack!=r1 ") else {
            Issue.record("not read")
            return
        }
        #expect(c.description == "ib&zone=a|nvme&!slow|rack!=r1")
        #expect(c.admits(["ib": "true", "zone": "a", "rack": "r1"]))
        #expect(!c.admits(["ib": "false", "zone": "a", "rack": "r1"]), "a label set to false is not had")
        #expect(c.admits(["nvme": "1", "rack": "r1"]))
        #expect(!c.admits(["nvme": "1", "slow": "yes", "rack": "r1"]))
        #expect(c.admits([:]), "rack!=r1 holds for a node without the label")
        for bad in ["", "ib&&zone", "(ib|nvme)&zone", "zone=", "=a", "!"] {
            if case .success(let x) = LabelConstraint.parse(bad) { Issue.record("\(bad) read as \(x)") }
        }
        guard case .failure(let e) = NodeSelection.parse(nodelist: "n1", exclude: "n[1-2]", constraint: nil) else {
            Issue.record("a node both listed and excluded")
            return
        }
        #expect(e.message.contains("both"))
    }

    func node(_ s: ClusterState, _ pass: SchedulingPass, _ id: JobID) -> String? {
        for d in pass.decisions { if case .start(id, let a, _, _) = d { return a.slices.first?.node } }
        return nil
    }

    @Test func wholeGPUsGoOnlyWhereTheSelectionAdmits() {
        var s = ClusterState.mixed()
        let listed = s.submit(.training(8) { $0.nodes = NodeSelection(nodes: ["h100-2"]) })
        let excluded = s.submit(.training(8) { $0.nodes = NodeSelection(exclude: ["h100-1", "a100-1"]) })
        let pass = s.schedule()
        #expect(node(s, pass, listed) == "h100-2", "best fit alone would take h100-1")
        #expect(node(s, pass, excluded) == "a100-2", "h100-1 excluded, h100-2 taken")
        // A gang over several nodes stays on the admitted ones.
        var t = ClusterState.mixed()
        let gang = t.submit(
            .training(8) {
                $0.gpuModels = ["L4"]; $0.nodes = NodeSelection(nodes: ["l4-3", "l4-4"])
            }
        )
        let p = t.schedule()
        let a = p.decisions.compactMap { if case .start(gang, let a, _, _) = $0 { a } else { nil } }.first
        #expect(Set(a?.slices.map(\.node) ?? []) == ["l4-3", "l4-4"])
    }

    @Test func labelsSelectAndSharesAndHostJobsFollow() {
        var s = ClusterState.mixed()
        // Relabel l4-2: removed, and added again with its label.
        var spec = s.node(named: "l4-2")!.spec
        spec.labels = ["zone": "b"]
        try! s.apply(Event(time: .zero, .nodeRemoved(name: "l4-2")))
        try! s.apply(Event(time: .zero, .nodeAdded(spec: spec)))
        let share = s.submit(
            .inference(1) {
                $0.gpuShare = 250; $0.nodes = NodeSelection(constraint: "zone=b")
            }
        )
        let host = s.submit(
            .training(0) {
                $0.cpuMilli = 1000; $0.nodes = NodeSelection(nodes: ["a100-2"])
            }
        )
        let pass = s.schedule()
        #expect(node(s, pass, share) == "l4-2")
        #expect(node(s, pass, host) == "a100-2")
        // Nothing admitted: blocked, with the selection named.
        let none = s.submit(.training(1) { $0.nodes = NodeSelection(constraint: "zone=c") })
        let later = s.schedule(at: 1)
        #expect(later.pending.first { $0.id == none }?.blocker == .noNodeSelected("labels zone=c"))
        #expect(Scheduler.permanentBlocker(for: s.jobs[none]!.spec, in: s) == .noNodeSelected("labels zone=c"))
        let tooBig = JobSpec(gpus: 5, nodes: NodeSelection(nodes: ["l4-1"]))
        #expect(Scheduler.permanentBlocker(for: tooBig, in: s) == .exceedsPool(needed: 5, total: 4))
    }

    @Test func preemptionStopsOnlyVictimsOnAdmittedNodes() {
        var s = ClusterState.fixture(models: [.a100], nodes: [("n1", "A100", 1, []), ("n2", "A100", 1, [])])
        let cheap = s.submit(.training(1) { $0.priorityClass = "batch" }, at: 0)
        let other = s.submit(.training(1), at: 0)
        s.schedule(at: 0)
        #expect(s.gpusInUse == 2)
        let serve = s.submit(
            .inference(1) { $0.nodes = NodeSelection(nodes: [s.jobs[other]!.allocation!.slices[0].node]) },
            at: 700
        )
        let pass = s.schedule(at: 700)
        #expect(s.preemptions(pass).map(\.victim) == [other], "the batch job is cheaper, but not where it may run")
        #expect(s.preemptions(pass).first?.by == serve)
        _ = cheap
    }

    @Test func niceLowersAJobsPlace() {
        var s = ClusterState.fixture(models: [.a100], nodes: [("n1", "A100", 1, [])])
        let first = s.submit(.training(1) { $0.nice = 5_000 }, at: 0)
        let second = s.submit(.training(1), at: 1)
        let pass = s.schedule(at: 2)
        #expect(s.starts(pass) == [second])
        _ = first
    }
}
