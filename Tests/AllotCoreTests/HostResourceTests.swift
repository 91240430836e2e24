import Testing

@testable import AllotCore

/// CPUs and memory beside GPUs: a job fits a node only if its GPUs, CPUs and memory all fit there.
@Suite struct HostResourceTests {
    /// Two nodes of 8 L4s, 32 CPUs and 256 GiB each.
    static func pool() -> ClusterState {
        var s = ClusterState.fixture(nodes: [])
        for name in ["n1", "n2"] {
            try! s.apply(
                Event(
                    time: .zero,
                    .nodeAdded(spec: NodeSpec(name: name, gpuModel: "L4", gpus: 8, cpus: 32, memoryGiB: 256))
                )
            )
        }
        return s
    }

    /// A job of 0 GPUs takes CPUs and memory only: on the node with the fewest free GPUs (CPUs taken beside
    /// free GPUs would strand them), never more than a node has, at no GPU cost.
    @Test func aJobOfCPUsOnlyGoesBesideBusyGPUsAndIsCountedThere() throws {
        var s = Self.pool()
        let gang = s.submit(.training(6))
        s.schedule(at: 0)
        let busy = try #require(s.jobs[gang]?.allocation?.slices.first?.node)
        let cpu = s.submit(
            .training(0) {
                $0.cpuMilli = 8000; $0.memoryMiB = 16384
            }
        )
        s.schedule(at: 1)
        let a = try #require(s.jobs[cpu]?.allocation)
        #expect(a.slices == [Allocation.Slice(node: busy, gpus: [], cpuMilli: 8000, memoryMiB: 16384)])
        #expect(a.gpuCount == 0 && s.jobs[cpu]?.costRate == 0)
        #expect(s.node(named: busy)!.cpuUsed == 6 * 4000 + 8000)
        #expect(s.tenantUsage["t"]!.usage.gpusInUse == 6)
        #expect(s.invariantViolations().isEmpty)
        #expect(try ClusterState(image: s.image) == s)
        // Full: the next waits for CPUs, saying so; one larger than any node is refused outright.
        let other = busy == "n1" ? "n2" : "n1"
        let fill = s.submit(.training(0) { $0.cpuMilli = 32_000 })
        let wait = s.submit(.training(0) { $0.cpuMilli = 8000 })
        let pass = s.schedule(at: 2)
        #expect(s.jobs[fill]?.allocation?.slices.first?.node == other)
        guard case .hostResources(0, 8000, nil)? = pass.reason(for: wait)?.blocker else {
            Issue.record("\(String(describing: pass.reason(for: wait)))")
            return
        }
        #expect(
            pass.reason(for: wait)!.blocker.sentence(for: s.jobs[wait]!.spec, in: s).contains("no node it may use has")
        )
        let huge = JobSpec.training(0) { $0.cpuMilli = 40_000 }
        guard case .exceedsNodeResources? = Scheduler.permanentBlocker(for: huge, in: s) else {
            Issue.record("\(String(describing: Scheduler.permanentBlocker(for: huge, in: s)))")
            return
        }
        #expect(
            Scheduler.permanentBlocker(for: huge, in: s)!.sentence(for: huge, in: s).contains(
                "40 CPUs and no GPU, more than any node it may use has, even idle (the most any node of the pool has: 32 CPUs)"
            )
        )
        #expect(Scheduler.permanentBlocker(for: .training(0) { $0.cpuMilli = 4000 }, in: s) == nil)
        // It ends: its CPUs come back.
        s.finish(cpu, at: 3)
        s.schedule(at: 3)
        #expect(s.jobs[wait]?.state == .running)
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func aJobGoesWhereItsCPUsAreFreeNotWhereItsGPUsFitBest() {
        var s = Self.pool()
        let hungry = s.submit(.inference(1) { $0.cpuMilli = 30_000 })
        s.schedule(at: 0)
        let a = s.jobs[hungry]!.allocation!
        #expect(a.slices == [Allocation.Slice(node: "n1", gpus: [0], cpuMilli: 30_000, memoryMiB: 256 * 1024 / 8)])
        // By GPUs n1 fits best (7 free); it has 2 CPUs left, and a 1-GPU job takes 4 by default.
        let plain = s.submit(.inference(1))
        s.schedule(at: 1)
        #expect(
            s.jobs[plain]!.allocation!.slices == [
                Allocation.Slice(node: "n2", gpus: [0], cpuMilli: 4000, memoryMiB: 32768)
            ]
        )
        #expect(s.node(named: "n1")!.cpuUsed == 30_000 && s.node(named: "n2")!.cpuUsed == 4000)
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func aGangSplitsItsCPUsByGPUsAndWaitsWhenNoNodesHoldThem() throws {
        var s = Self.pool()
        let hungry = s.submit(.inference(1) { $0.cpuMilli = 30_000 })
        let other = s.submit(.inference(1) { $0.cpuMilli = 8000 })
        s.schedule(at: 0)
        #expect(s.jobs[other]!.allocation!.slices.first!.node == "n2")
        // 2 GPUs and 40 CPUs: no node has 40 CPUs; split, 20 per GPU: n1 has 2 free, n2 has 24 — only one GPU.
        let gang = s.submit(.training(2) { $0.cpuMilli = 40_000 })
        let pass = s.schedule(at: 1)
        #expect(s.jobs[gang]!.state == .pending)
        #expect(pass.reason(for: gang)?.blocker == .hostResources(needed: 2, cpuMilli: 40_000, memoryMiB: 2 * 32768))
        let why = try #require(Scheduler().explain(gang, in: s, pass: pass))
        #expect(
            why.lines.contains { $0.contains("waiting for CPUs or memory") && $0.contains("40 CPUs") },
            "\(why.lines)"
        )
        s.finish(hungry, at: 2)
        s.schedule(at: 2)
        let a = s.jobs[gang]!.allocation!
        #expect(a.slices.count == 2, "\(a)")
        #expect(a.slices.allSatisfy { $0.cpuMilli == 20_000 && $0.gpus.count == 1 })
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func aJobThatLacksCPUsDoesNotHoldBackPlainJobsBehindIt() {
        var s = Self.pool()
        s.submit(.inference(1) { $0.cpuMilli = 30_000 })
        s.submit(.inference(1) { $0.cpuMilli = 30_000 })
        s.schedule(at: 0)
        // Both nodes have 2 CPUs left: a third hungry job waits; a plain one behind it needs 4 and waits too;
        // one asking for 1 CPU runs — the first failure says nothing about it.
        let hungry = s.submit(.inference(1) { $0.cpuMilli = 30_000 })
        let small = s.submit(.inference(1) { $0.cpuMilli = 1000 })
        s.schedule(at: 1)
        #expect(s.jobs[hungry]!.state == .pending)
        #expect(s.jobs[small]!.state == .running)
    }

    /// A job waiting for CPUs while GPUs for it are free is promised a start when running jobs give enough
    /// CPUs back (not "now"), and jobs that would outlast that start leave what it needs alone: they may take
    /// only what its node has beyond that; shorter ones may take it all.
    @Test func aJobWaitingForCPUsReservesThemFromWhenRunningJobsGiveThemBack() throws {
        var s = Self.pool()
        let a = s.submit(
            .training(1) {
                $0.cpuMilli = 20_000; $0.walltime = 1000
            }
        )
        let b = s.submit(
            .training(1) {
                $0.cpuMilli = 30_000; $0.walltime = 5000
            }
        )
        s.schedule(at: 0)
        let na = try #require(s.jobs[a]?.allocation?.slices.first?.node)
        let nb = try #require(s.jobs[b]?.allocation?.slices.first?.node)
        #expect(na != nb)
        // 12 CPUs free beside a, 2 beside b: 24 wait for a to give its 20 back.
        let hungry = s.submit(.training(1) { $0.cpuMilli = 24_000 })
        var pass = s.schedule(at: 1)
        #expect(s.jobs[hungry]?.state == .pending)
        let r = try #require(pass.reservation)
        #expect(r.job == hungry && r.from == Instant(seconds: 1000), "\(r)")
        #expect(r.allocation?.slices.map(\.node) == [na])
        let why = try #require(Scheduler().explain(hungry, in: s, pass: pass)).lines
        #expect(why.contains { $0.contains("reserved: expected to start by") }, "\(why)")
        #expect(why.contains { $0.contains("L4: 14 free, largest block 7 — its GPUs fit now, not its CPUs") }, "\(why)")
        // It needs 4 of the 12 free now (a gives 20 back): a job of 10 CPUs that would outlast its start
        // waits; one of 8 runs beside it; a short one (done before a ends) takes the last 4.
        let ten = s.submit(.training(0) { $0.cpuMilli = 10_000 })
        pass = s.schedule(at: 2)
        #expect(s.jobs[ten]?.state == .pending)
        let eight = s.submit(.training(0) { $0.cpuMilli = 8000 })
        pass = s.schedule(at: 3)
        #expect(s.jobs[eight]?.allocation?.slices.first?.node == na)
        #expect(s.jobs[ten]?.state == .pending)
        // A job of CPUs only is told what nodes have free, and of no GPUs it could use.
        let waiting = try #require(Scheduler().explain(ten, in: s, pass: pass)).lines
        #expect(waiting.contains { $0.contains("L4: at most 4 CPUs and 224 GiB free on one node") }, "\(waiting)")
        #expect(!waiting.contains { $0.contains("GPUs this job could use") }, "\(waiting)")
        let running = try #require(Scheduler().explain(eight, in: s, pass: pass)).lines
        #expect(running.first?.contains("running on \(na) (8 CPUs and no GPU: no GPU cost)") == true, "\(running)")
        let short = s.submit(
            .training(0) {
                $0.cpuMilli = 4000; $0.walltime = 500
            }
        )
        pass = s.schedule(at: 4)
        #expect(s.jobs[short]?.allocation?.slices.first?.node == na, "\(String(describing: pass.reason(for: short)))")
        #expect(s.invariantViolations().isEmpty)
        // a ends (after the short one): it starts, on what it was promised.
        s.finish(short, at: 500)
        s.finish(a, at: 1000)
        s.schedule(at: 1000)
        #expect(s.jobs[hungry]?.state == .running)
        #expect(s.jobs[hungry]?.allocation?.slices.first?.node == na)
    }

    /// A job of CPUs only that cannot start reserves them, as a job of GPUs does: on the node where running
    /// jobs give enough back soonest. Jobs that would outlast its start leave what it needs there alone (they
    /// may take the rest); shorter ones may take it all; it starts on them when they come back. Without the
    /// reservation, every smaller job would take the CPUs as they free, and it would never start.
    @Test func aJobOfCPUsOnlyThatWaitsReservesTheCPUsItNeeds() throws {
        var s = Self.pool()
        let a = s.submit(
            .training(0) {
                $0.cpuMilli = 20_000; $0.walltime = 1000
            }
        )
        let b = s.submit(
            .training(0) {
                $0.cpuMilli = 30_000; $0.walltime = 5000
            }
        )
        s.schedule(at: 0)
        let na = try #require(s.jobs[a]?.allocation?.slices.first?.node)
        #expect(s.jobs[b]?.allocation?.slices.first?.node == (na == "n1" ? "n2" : "n1"))
        // 12 CPUs free beside a, 2 beside b: 24 wait for a to give its 20 back.
        let big = s.submit(.training(0) { $0.cpuMilli = 24_000 })
        var pass = s.schedule(at: 1)
        #expect(s.jobs[big]?.state == .pending)
        let r = pass.reservation
        #expect(r?.job == big && r?.from == Instant(seconds: 1000), "\(String(describing: r))")
        #expect(r?.allocation?.slices == [Allocation.Slice(node: na, gpus: [])])
        let why = try #require(Scheduler().explain(big, in: s, pass: pass)).lines
        #expect(why.contains { $0.contains("reserved: expected to start by") && $0.contains("on \(na),") }, "\(why)")
        // It needs 4 of the 12 free now: 10 CPUs that would outlast its start wait; 8 run beside it; a
        // short job (done before a ends) takes the last 4.
        let ten = s.submit(.training(0) { $0.cpuMilli = 10_000 })
        pass = s.schedule(at: 2)
        #expect(s.jobs[ten]?.state == .pending)
        let told = try #require(Scheduler().explain(ten, in: s, pass: pass)).lines
        #expect(
            told.contains { $0.contains("the first blocked job, \(big), holds CPUs and memory of \(na) from") },
            "\(told)"
        )
        let eight = s.submit(.training(0) { $0.cpuMilli = 8000 })
        s.schedule(at: 3)
        #expect(s.jobs[eight]?.allocation?.slices.first?.node == na)
        #expect(s.jobs[ten]?.state == .pending)
        let short = s.submit(
            .training(0) {
                $0.cpuMilli = 4000; $0.walltime = 500
            }
        )
        s.schedule(at: 4)
        #expect(s.jobs[short]?.allocation?.slices.first?.node == na)
        #expect(s.invariantViolations().isEmpty)
        s.finish(short, at: 500)
        s.schedule(at: 500)
        #expect(s.jobs[ten]?.state == .pending)
        s.finish(a, at: 1000)
        s.schedule(at: 1000)
        #expect(s.jobs[big]?.state == .running)
        #expect(s.jobs[big]?.allocation?.slices.first?.node == na)
        #expect(s.jobs[ten]?.state == .pending)
        #expect(s.invariantViolations().isEmpty)
        // One CPU (what `allotctl submit --gpus 0` asks by default) is said in the singular.
        let one = s.submit(.training(0) { $0.cpuMilli = 1000 })
        let onePass = s.schedule(at: 1001)
        let line = try #require(Scheduler().explain(one, in: s, pass: onePass)).lines.first
        #expect(line?.contains("(1 CPU and no GPU: no GPU cost)") == true, "\(String(describing: line))")
    }

    /// A job of CPUs only runs no faster beside one GPU model than another: its estimate is its run time on
    /// any node, and a walltime rules out no model (before, an L4 pool's 0.35 stretched a day to 2.9 days,
    /// and a 500 s walltime left it only models without nodes: "more than any node has").
    /// GPUs kept for inference are kept with their CPUs and memory: a job of CPUs only goes where it strands
    /// none of them; where it must, it borrows them (preemptible only), and inference takes them back rather
    /// than spill to a dearer model.
    @Test func aJobOfCPUsOnlyBorrowsTheCPUsOfGPUsKeptForInference() throws {
        var s = ClusterState.fixture(models: [.h100, .l4], nodes: []) {
            $0.inferenceReserve = [InferenceReserve(gpuModel: "L4", gpus: 8)]
        }
        for (name, model, gpus, cpus) in [("l4-1", "L4", 4, 48), ("l4-2", "L4", 4, 48), ("h1", "H100", 8, 128)] {
            try s.apply(
                Event(
                    time: .zero,
                    .nodeAdded(spec: NodeSpec(name: name, gpuModel: model, gpus: gpus, cpus: cpus, memoryGiB: 512))
                )
            )
        }
        // Fewer free GPUs on the L4s, but CPUs taken there would strand GPUs kept for inference.
        let small = s.submit(.training(0) { $0.cpuMilli = 16_000 })
        s.schedule(at: 0)
        #expect(s.jobs[small]?.allocation?.slices.first?.node == "h1")
        #expect(s.jobs[small]?.loans == [])
        let filler = s.submit(.training(0) { $0.cpuMilli = 80_000 })
        s.schedule(at: 1)
        #expect(s.jobs[filler]?.allocation?.slices.first?.node == "h1")
        // 32 CPUs left on h1: 40 fit only on an L4, stranding its GPUs. Not preemptible: it may not borrow them.
        let firm = s.submit(
            .training(0) {
                $0.cpuMilli = 40_000; $0.preemptible = false
            }
        )
        var pass = s.schedule(at: 2)
        guard case .mustBorrow(.inferenceReserve(model: "L4"))? = pass.reason(for: firm)?.blocker else {
            Issue.record("\(String(describing: pass.reason(for: firm)))")
            return
        }
        #expect(
            pass.reason(for: firm)!.blocker.sentence(for: s.jobs[firm]!.spec, in: s).contains(
                "it could run only on CPUs and memory that free L4 GPUs reserved for inference need"
            )
        )
        try s.apply(Event(time: Instant(seconds: 2), .jobCancelled(id: firm, by: nil, grace: 0)))
        // Preemptible: on loan, on each L4.
        let etl = [40_000, 40_000].map { c in s.submit(.training(0) { $0.cpuMilli = c }) }
        s.schedule(at: 3)
        #expect(Set(etl.compactMap { s.jobs[$0]?.allocation?.slices.first?.node }) == ["l4-1", "l4-2"])
        for id in etl { #expect(s.jobs[id]?.loans == [.inferenceReserve(model: "L4")]) }
        let why = try #require(Scheduler().explain(etl[0], in: s))
        #expect(
            why.lines.contains {
                $0.contains("on loan: it uses the CPUs and memory that free L4 GPUs reserved for inference need")
            },
            "\(why.lines)"
        )
        // Inference short of CPUs on the L4s takes one back, rather than start on an H100 (room there).
        let serve = s.submit(.inference(1) { $0.cpuMilli = 12_000 })
        pass = s.schedule(at: 4)
        let stops = s.preemptions(pass)
        #expect(stops.count == 1 && stops.allSatisfy { etl.contains($0.victim) && $0.reason == .inference }, "\(stops)")
        #expect(s.jobs[serve]?.state == .pending)
        s.finish(stops[0].victim, code: 143, at: 5)
        s.schedule(at: 5)
        #expect(s.jobs[serve]?.state == .running)
        #expect(s.jobs[serve]?.allocation?.model == "L4")
        #expect(s.invariantViolations().isEmpty)
    }

    /// In one pass, a job of CPUs only that asks no less than one that found no node is told so without a
    /// look at every node; one that asks less, or asks for less memory, still starts.
    @Test func jobsOfCPUsOnlyThatFoundNoNodeDoNotHoldBackSmallerOnes() throws {
        var s = Self.pool()
        let gangs = [s.submit(.training(4) { $0.cpuMilli = 24_000 }), s.submit(.training(4) { $0.cpuMilli = 24_000 })]
        s.schedule(at: 0)
        // 8 CPUs free on each node.
        let asks: [(cpu: Int, memory: Int)] = [
            (12_000, 1024), (16_000, 2048), (8000, 4096), (8000, 200_000), (6000, 1024),
        ]
        let ids = asks.map { a in
            s.submit(
                .training(0) {
                    $0.cpuMilli = a.cpu; $0.memoryMiB = a.memory
                }
            )
        }
        let pass = s.schedule(at: 1)
        #expect(gangs.allSatisfy { s.jobs[$0]?.state == .running })
        #expect(ids.map { s.jobs[$0]!.state } == [.pending, .pending, .running, .pending, .running])
        for (i, id) in ids.enumerated() where s.jobs[id]!.state == .pending {
            guard case .hostResources(0, asks[i].cpu, asks[i].memory)? = pass.reason(for: id)?.blocker else {
                Issue.record("\(i): \(String(describing: pass.reason(for: id)))")
                continue
            }
        }
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func aJobOfCPUsOnlyIsNotScaledByGPUSpeeds() throws {
        var s = Self.pool()
        let l4 = try #require(s.config.model(named: "L4"))
        #expect(l4.speed != 1)
        let spec = JobSpec.training(0) {
            $0.cpuMilli = 1000; $0.estimate = 86400
        }
        #expect(s.expectedSeconds(of: spec, on: l4) == 86400)
        let id = s.submit(spec)
        s.schedule(at: 0)
        let why = try #require(Scheduler().explain(id, in: s)).lines
        #expect(why.contains { $0.contains("expected run time 1d00h") }, "\(why)")
        let timed = s.submit(
            .training(0) {
                $0.cpuMilli = 1000; $0.walltime = 500
            }
        )
        s.schedule(at: 2)
        #expect(s.jobs[timed]?.state == .running)
        #expect(Scheduler.walltimeFit(for: s.jobs[timed]!.spec, in: s) == nil)
    }

    /// An inference job short of CPUs (its GPU is free) stops a training job whose CPUs make room — not the
    /// one that loses least but frees too few — holds the free part meanwhile, and starts on what it freed.
    /// A job of CPUs only may preempt the same way.
    @Test func aJobShortOfCPUsPreemptsAJobWhoseCPUsMakeRoom() throws {
        var s = Self.pool()
        let big = s.submit(.training(2) { $0.cpuMilli = 29_000 })
        s.schedule(at: 0)
        let nBig = try #require(s.jobs[big]?.allocation?.slices.first?.node)
        let other = s.submit(.training(1) { $0.cpuMilli = 30_000 })
        s.schedule(at: 1)
        let nOther = try #require(s.jobs[other]?.allocation?.slices.first?.node)
        #expect(nBig != nOther)
        // Youngest and on one GPU: the least work at risk, but its 1 CPU leaves 3 of the 4 needed.
        let small = s.submit(.training(1) { $0.cpuMilli = 1000 })
        s.schedule(at: 100)
        #expect(s.jobs[small]?.allocation?.slices.first?.node == nBig)
        let serve = s.submit(.inference(1) { $0.cpuMilli = 4000 })
        var pass = s.schedule(at: 1000)
        #expect(s.preemptions(pass).map(\.victim) == [other], "\(s.preemptions(pass))")
        #expect(s.jobs[serve]?.state == .pending)
        guard case .waitingForPreemption(victims: 1)? = pass.reason(for: serve)?.blocker else {
            Issue.record("\(String(describing: pass.reason(for: serve)))")
            return
        }
        // While it stops, nothing more is stopped for it (a job of CPUs only goes beside the busiest GPUs,
        // big's: see the next test for what a waiting job holds).
        let filler = s.submit(.training(0) { $0.cpuMilli = 2000 })
        pass = s.schedule(at: 1001)
        #expect(s.preemptions(pass).isEmpty)
        #expect(s.jobs[filler]?.allocation?.slices.first?.node == nBig)
        s.finish(other, code: 143, at: 1002)
        pass = s.schedule(at: 1002)
        #expect(s.jobs[serve]?.state == .running)
        #expect(s.jobs[serve]?.allocation?.slices.first?.node == nOther)
        #expect(s.jobs[small]?.state == .running && s.jobs[big]?.state == .running)
        #expect(s.invariantViolations().isEmpty)
        // A job of CPUs only, of a class that preempts: 28 CPUs are free beside serve, it needs 29; big's
        // make room (the filler's and small's 3 would not).
        let tokenizer = s.submit(.inference(0) { $0.cpuMilli = 29_000 })
        pass = s.schedule(at: 1003)
        #expect(s.preemptions(pass).map(\.victim) == [big], "\(s.preemptions(pass))")
        s.finish(big, code: 143, at: 1004)
        s.schedule(at: 1004)
        #expect(s.jobs[tokenizer]?.allocation?.slices.first?.node == nBig)
        #expect(s.invariantViolations().isEmpty)
    }

    /// While its victims stop, a job holds the part of its CPUs they do not give back: a job that would take
    /// it waits; one that leaves it runs; once they stop the job starts there.
    @Test func aJobWaitingForItsVictimsHoldsTheCPUsTheyDoNotGiveBack() throws {
        var s = Self.pool()
        // n1 and n2 each: a job that may not be stopped; n1 also a preemptible one of 3 CPUs. 2 CPUs free on n1.
        let firm1 = s.submit(
            .training(1) {
                $0.cpuMilli = 27_000; $0.preemptible = false
            }
        )
        let firm2 = s.submit(
            .training(1) {
                $0.cpuMilli = 32_000; $0.preemptible = false
            }
        )
        s.schedule(at: 0)
        let n1 = try #require(s.jobs[firm1]?.allocation?.slices.first?.node)
        #expect(s.jobs[firm2]?.allocation?.slices.first?.node != n1)
        let victim = s.submit(.training(1) { $0.cpuMilli = 3000 })
        s.schedule(at: 1)
        #expect(s.jobs[victim]?.allocation?.slices.first?.node == n1)
        // 4 CPUs: the victim's 3 and 1 of the 2 free.
        let serve = s.submit(.inference(1) { $0.cpuMilli = 4000 })
        var pass = s.schedule(at: 1000)
        #expect(s.preemptions(pass).map(\.victim) == [victim], "\(s.preemptions(pass))")
        // In this pass and the next: 2 CPUs would take what it holds; 1 leaves it.
        let two = s.submit(.training(0) { $0.cpuMilli = 2000 })
        pass = s.schedule(at: 1001)
        #expect(s.jobs[two]?.state == .pending, "\(String(describing: s.jobs[two]?.allocation))")
        #expect(s.preemptions(pass).isEmpty)
        let one = s.submit(.training(0) { $0.cpuMilli = 1000 })
        s.schedule(at: 1002)
        #expect(s.jobs[one]?.allocation?.slices.first?.node == n1)
        #expect(s.jobs[two]?.state == .pending)
        s.finish(victim, code: 143, at: 1003)
        s.schedule(at: 1003)
        #expect(s.jobs[serve]?.allocation?.slices.first?.node == n1)
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func memoryLimitsAsCPUsDoAndSharesTakeTheirShareOfTheNode() {
        var s = Self.pool()
        let big = s.submit(.inference(1) { $0.memoryMiB = 300 * 1024 })
        let pass = s.schedule(at: 0)
        #expect(s.jobs[big]!.state == .pending)
        #expect(pass.reason(for: big)?.blocker == .exceedsNodeResources(cpuMilli: nil, memoryMiB: 300 * 1024))
        #expect(Scheduler.permanentBlocker(for: s.jobs[big]!.spec, in: s) != nil)
        // Spread over GPUs on both nodes it could run: not refused.
        #expect(Scheduler.permanentBlocker(for: JobSpec.training(4) { $0.memoryMiB = 300 * 1024 }, in: s) == nil)
        let share = s.submit(.inference(1) { $0.gpuShare = 250 })
        s.schedule(at: 1)
        let slice = s.jobs[share]!.allocation!.slices[0]
        #expect(slice.cpuMilli == 1000 && slice.memoryMiB == 8192)
    }

    @Test func theStateRefusesCPUsANodeDoesNotHave() throws {
        var s = Self.pool()
        let a = s.submit(.inference(1))
        let slice = Allocation.Slice(node: "n1", gpus: [0], cpuMilli: 33_000, memoryMiB: 1)
        #expect(throws: StateError.self) {
            try s.apply(Event(time: .zero, .jobStarted(id: a, allocation: Allocation(model: "L4", slices: [slice]))))
        }
        #expect(
            ClusterState.specProblems(.inference(1) { $0.cpuMilli = 0 }).first?.contains("CPUs must be above 0") == true
        )
        // Nodes that declare nothing take any request.
        var bare = ClusterState.fixture(nodes: [("x", "L4", 2, [])])
        let j = bare.submit(.inference(1) { $0.cpuMilli = 1_000_000 })
        bare.schedule(at: 0)
        #expect(bare.jobs[j]!.state == .running)
        #expect(bare.jobs[j]!.allocation!.slices[0].cpuMilli == nil)
        let back = try ClusterState(image: s.image)
        #expect(back == s)
    }
}
