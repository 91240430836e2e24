import Testing

@testable import AllotCore

/// MIG instances: NVIDIA's profile tables, placement on valid starts, static layouts, prices, and what
/// `why` says.
@Suite struct MIGTests {
    static let h100 = GPUModel(
        name: "H100-80GB",
        memoryGiB: 80,
        pricePerHour: 7.0,
        speed: 2.0,
        mig: MIGTable.builtIn(forModel: "H100-80GB", memoryGiB: 80)
    )

    /// A pool of H100s: (name, gpus, mode, layout).
    static func pool(_ nodes: [(String, Int, MIGMode, [String])]) -> ClusterState {
        var s = ClusterState()
        try! s.apply(Event(time: .zero, .configApplied(config: PoolConfig(gpuModels: [h100]))))
        for (name, gpus, mode, layout) in nodes {
            let spec = NodeSpec(
                name: name,
                gpuModel: "H100-80GB",
                gpus: gpus,
                mig: mode,
                migLayout: layout.map { MIGSlot(parsing: $0)! }
            )
            try! s.apply(Event(time: .zero, .nodeAdded(spec: spec)))
        }
        return s
    }

    static func mig(_ profiles: String...) -> JobSpec {
        JobSpec.inference(1) { $0.mig = profiles }
    }

    @Test func builtInTablesAreNVIDIAsAndPricesTakeTheLargerShare() throws {
        let a40 = try #require(MIGTable.builtIn(forModel: "A100-40GB", memoryGiB: 40))
        #expect(a40.profiles.map(\.name) == ["1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"])
        #expect(MIGTable.builtIn(forModel: "NVIDIA A100-SXM4-80GB", memoryGiB: 80)?.profiles[0].name == "1g.10gb")
        #expect(MIGTable.builtIn(forModel: "H200", memoryGiB: 141)?.profiles.last?.name == "7g.141gb")
        #expect(MIGTable.builtIn(forModel: "L4", memoryGiB: 24) == nil)
        let h = try #require(Self.h100.mig)
        #expect(h.profile(named: "3g.40gb")?.starts == [0, 4])
        #expect(h.profile(named: "1g.10gb")?.starts == Array(0...6))
        // A 1g instance holds a seventh of the compute; a 3g.40gb half the memory: each pays the larger.
        #expect(MIGTable.priceMilli(h.profile(named: "1g.10gb")!) == 143)
        #expect(MIGTable.priceMilli(h.profile(named: "1g.20gb")!) == 250)
        #expect(MIGTable.priceMilli(h.profile(named: "3g.40gb")!) == 500)
        #expect(MIGTable.priceMilli(h.profile(named: "7g.80gb")!) == 1000)
        for p in h.profiles { #expect(p.starts.allSatisfy { $0 + p.memorySlices <= 8 }) }
        #expect(h.problems(model: "H100").isEmpty)
        let bad = MIGTable(profiles: [MIGProfile(name: "x", compute: 9, memorySlices: 4, memoryGiB: 1, starts: [6])])
        #expect(bad.problems(model: "M").count == 2)
    }

    @Test func instancesFillABrokenGPUBeforeAFreshOneAndWholeJobsTakeTheFreshOne() throws {
        var s = Self.pool([("h1", 2, .dynamic, [])])
        let small = (0..<7).map { _ in s.submit(Self.mig("1g.10gb")) }
        s.schedule(at: 1)
        let gpus = small.map { s.jobs[$0]!.allocation!.slices[0].gpus[0] }
        #expect(Set(gpus).count == 1, "\(gpus)")
        let starts = small.map { s.jobs[$0]!.allocation!.mig!.start }.sorted()
        #expect(starts == Array(0...6))
        #expect(s.jobs[small[0]]!.costRate == 7.0 * 0.143 / 3600)
        let node = s.node(named: "h1")!
        #expect(node.migUsed[gpus[0]] == 0x7F && node.sharers[gpus[0]].count == 7)
        // The other GPU is still whole: a whole-GPU job takes it.
        let whole = s.submit(.inference(1))
        s.schedule(at: 2)
        #expect(s.jobs[whole]?.state == .running)
        #expect(s.jobs[whole]!.allocation!.slices[0].gpus == [1 - gpus[0]])
        // An eighth 1g.10gb finds no start: slice 7 alone fits no 1g.10gb (starts 0–6).
        let eighth = s.submit(Self.mig("1g.10gb"))
        let pass = s.schedule(at: 3)
        guard case .noMIGRoom(let detail)? = pass.reason(for: eighth)?.blocker else {
            Issue.record("\(String(describing: pass.reason(for: eighth)))")
            return
        }
        #expect(detail.contains("MIG 1g.10gb needs memory slices 0, 1, 2, 3, 4, 5, 6 free"), "\(detail)")
        #expect(detail.contains("h1 GPU \(gpus[0])"), "\(detail)")
        #expect(s.invariantViolations().isEmpty)
        // One ends: the eighth takes its slice; the last to go frees the GPU for whole jobs.
        let freed = s.jobs[small[3]]!.allocation!.mig!.start
        s.finish(small[3], at: 4)
        s.schedule(at: 5)
        #expect(s.jobs[eighth]?.allocation?.mig?.start == freed)
        for id in small where id != small[3] { s.finish(id, at: 6) }
        #expect(s.node(named: "h1")!.usedMask != 0)
        s.finish(eighth, at: 7)
        #expect(s.node(named: "h1")!.migUsed == [0, 0])
        #expect(s.node(named: "h1")!.usedMask == 1 << UInt64(1 - gpus[0]))
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func aStartLeavesTheMostRoomAndProfilesAreTriedInTheJobsOrder() throws {
        var s = Self.pool([("h1", 1, .dynamic, [])])
        // A 3g.40gb may start at 0 or 4; either leaves room for one more 3g or 4g.
        let big = s.submit(Self.mig("3g.40gb"))
        s.schedule(at: 1)
        let start = try #require(s.jobs[big]?.allocation?.mig?.start)
        // A 2g.20gb then goes on the other half, at the start that leaves a 2g beside it.
        let two = s.submit(Self.mig("2g.20gb"))
        s.schedule(at: 2)
        let twoStart = try #require(s.jobs[two]?.allocation?.mig?.start)
        #expect(start == 4 ? [0, 2].contains(twoStart) : twoStart == 4, "\(start) \(twoStart)")
        // No 4g.40gb fits now; a job that takes a 4g or else a 1g gets the 1g.
        let either = s.submit(Self.mig("4g.40gb", "1g.10gb"))
        s.schedule(at: 3)
        #expect(s.jobs[either]?.allocation?.mig?.profile == "1g.10gb")
        #expect(s.jobs[either]?.allocation?.description.hasPrefix("h1[0]:1g.10gb@") == true)
        #expect(s.invariantViolations().isEmpty)
    }

    /// `why` and `show` say how many memory slices of its GPU an instance's start left free.
    @Test func anInstancesPlacementNoteCountsTheMemorySlicesLeft() throws {
        var s = Self.pool([("h1", 1, .dynamic, [])])
        let one = s.submit(Self.mig("1g.10gb"))
        s.schedule(at: 1)
        let three = s.submit(Self.mig("3g.40gb"))
        let two = s.submit(Self.mig("2g.20gb"))
        s.schedule(at: 2)
        func note(_ id: JobID) throws -> String {
            let job = try #require(s.jobs[id])
            #expect(job.state == .running)
            return try #require(job.placement).text(for: .init(job.spec))
        }
        #expect(try note(one).hasSuffix("leaves 7 of its GPU's 8 memory slices free"))
        #expect(try note(three).hasSuffix("leaves 3 of its GPU's 8 memory slices free"))
        #expect(try note(two).hasSuffix("leaves 1 of its GPU's 8 memory slices free"))
        // The last slice left takes a 1g.10gb only where one may start: it fills the GPU if so.
        let used = s.node(named: "h1")!.migUsed[0]
        let free = (0..<7).first { used & (1 << $0) == 0 }
        let last = s.submit(Self.mig("1g.10gb"))
        s.schedule(at: 3)
        if free != nil { #expect(try note(last).hasSuffix("fills its GPU's memory slices")) }
    }

    /// A MIG job whose CPUs no MIG node could hold beside it is refused at submit, as a whole job is.
    @Test func aMIGJobAskingMoreCPUsThanAnyMIGNodeHasCanNeverStart() throws {
        var s = Self.pool([])
        let spec = NodeSpec(name: "h1", gpuModel: "H100-80GB", gpus: 2, cpus: 16, memoryGiB: 64, mig: .dynamic)
        try s.apply(Event(time: .zero, .nodeAdded(spec: spec)))
        let huge = JobSpec.inference(1) {
            $0.mig = ["1g.10gb"]
            $0.cpuMilli = 20_000
        }
        let blocker = try #require(Scheduler.permanentBlocker(for: huge, in: s))
        #expect(
            blocker.sentence(for: huge, in: s).contains(
                "20 CPUs with a MIG instance, more than the nodes that could hold it have"
            ),
            "\(blocker.sentence(for: huge, in: s))"
        )
        #expect(
            Scheduler.permanentBlocker(
                for: .inference(1) {
                    $0.mig = ["1g.10gb"]; $0.cpuMilli = 16_000
                },
                in: s
            ) == nil
        )
    }

    /// A MIG job with free slices but not its CPUs beside them is told so, holds no slices, and gets no
    /// estimated start of "now" from a plan that counts only GPUs.
    @Test func aMIGJobShortOfCPUsIsToldSoAndHoldsNoSlices() throws {
        var s = Self.pool([])
        let spec = NodeSpec(name: "h1", gpuModel: "H100-80GB", gpus: 2, cpus: 16, memoryGiB: 64, mig: .dynamic)
        try s.apply(Event(time: .zero, .nodeAdded(spec: spec)))
        let whole = s.submit(.inference(1) { $0.cpuMilli = 12_000 })
        s.schedule(at: 1)
        #expect(s.jobs[whole]?.state == .running)
        let mig = s.submit(
            .training(1) {
                $0.mig = ["1g.10gb"]; $0.cpuMilli = 8_000
            }
        )
        let pass = s.schedule(at: 2)
        guard case .hostResources(1, 8_000, _)? = pass.reason(for: mig)?.blocker else {
            Issue.record("\(String(describing: pass.reason(for: mig)))")
            return
        }
        let why = try #require(Scheduler(policy: .allot).explain(mig, in: s, pass: pass)).lines
        #expect(why.contains { $0.hasPrefix("waiting for CPUs or memory") }, "\(why)")
        #expect(!why.contains { $0.hasPrefix("estimated start") }, "\(why)")
        #expect(!why.contains { $0.hasPrefix("holds on") }, "\(why)")
        // Its model lines say which models could make its instance, not that a whole free GPU "fits now".
        #expect(why.contains("  H100-80GB: 1 MIG node(s) that offer 1g.10gb, 1 GPU(s) free whole"), "\(why)")
        #expect(!why.contains { $0.contains("fits now") }, "\(why)")
        // The whole job ends: its CPUs come back and the instance starts.
        s.finish(whole, at: 3)
        s.schedule(at: 3)
        #expect(s.jobs[mig]?.state == .running)
    }

    @Test func aStaticLayoutGivesOnlyItsInstancesAndNeverWholeGPUs() throws {
        var s = Self.pool([("s1", 1, .static, ["3g.40gb@0", "3g.40gb@4"])])
        let a = s.submit(Self.mig("3g.40gb"))
        let b = s.submit(Self.mig("3g.40gb"))
        let c = s.submit(Self.mig("3g.40gb"))
        let pass = s.schedule(at: 1)
        #expect(Set([a, b].map { s.jobs[$0]!.allocation!.mig!.start }) == [0, 4])
        #expect(pass.reason(for: c)?.blocker.waitsForGPUs == true)
        // A profile the layout lacks can never start: refused at submit, with what is offered.
        let blocker = Scheduler.permanentBlocker(for: Self.mig("1g.10gb"), in: s)
        guard case .noMIGProfile(let detail)? = blocker else {
            Issue.record("\(String(describing: blocker))")
            return
        }
        #expect(detail.contains("offered: H100-80GB: 3g.40gb"), "\(detail)")
        // Whole-GPU jobs never get a static node's GPU, even when it is idle.
        s.finish(a, at: 2)
        s.finish(b, at: 2)
        s.schedule(at: 2)
        #expect(s.jobs[c]?.state == .running)
        s.finish(c, at: 3)
        let whole = s.submit(.inference(1))
        let share = s.submit(JobSpec.inference(1) { $0.gpuShare = 250 })
        s.schedule(at: 4)
        #expect(s.jobs[whole]?.state == .pending && s.jobs[share]?.state == .pending)
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func theStateRefusesInstancesThatOverlapOrBreakTheRules() throws {
        var s = Self.pool([("h1", 2, .dynamic, []), ("s1", 1, .static, ["3g.40gb@4"]), ("off", 1, .off, [])])
        let a = s.submit(Self.mig("3g.40gb"))
        let b = s.submit(Self.mig("4g.40gb", "3g.40gb"))
        let whole = s.submit(.inference(1))
        func start(_ id: JobID, _ node: String, _ gpu: Int, _ slot: String?, _ milli: Int?) -> StateError? {
            let alloc = Allocation(
                model: "H100-80GB",
                slices: [.init(node: node, gpus: [gpu])],
                mig: slot.flatMap(MIGSlot.init(parsing:)),
                migMilli: milli
            )
            do {
                var copy = s
                try copy.apply(Event(time: Instant(seconds: 1), .jobStarted(id: id, allocation: alloc)))
                s = copy
                return nil
            } catch { return error }
        }
        #expect(start(a, "h1", 0, "3g.40gb@2", 500)?.message.contains("may start at memory slice 0, 4") == true)
        #expect(start(a, "h1", 0, "3g.40gb@0", 429)?.message.contains("priced at 500") == true)
        #expect(start(a, "off", 0, "3g.40gb@0", 500)?.message.contains("mig = \"off\"") == true)
        #expect(start(a, "s1", 0, "3g.40gb@0", 500)?.message.contains("layout has no 3g.40gb@0") == true)
        #expect(start(a, "h1", 0, nil, nil)?.message.contains("asks for a MIG instance") == true)
        #expect(start(whole, "s1", 0, nil, nil)?.message.contains("gives only its MIG instances") == true)
        #expect(start(a, "h1", 0, "3g.40gb@0", 500) == nil)
        #expect(start(b, "h1", 0, "4g.40gb@0", 572)?.message.contains("memory slices 0–3 of GPU 0 of h1") == true)
        #expect(start(whole, "h1", 0, nil, nil)?.message.contains("held by job") == true)
        #expect(start(b, "h1", 0, "3g.40gb@4", 500) == nil)
        #expect(s.node(named: "h1")!.migUsed[0] == 0xFF)
        #expect(s.invariantViolations().isEmpty)
        // Snapshots rebuild the slices from the allocations.
        #expect(try ClusterState(image: s.image) == s)
    }

    /// Property: MIG jobs, shares and whole jobs come and go at random on dynamic MIG nodes; after every
    /// step no memory slice is given twice, every instance sits on one of its profile's starts, compute slices
    /// add up to at most 7, and no GPU holds instances beside a whole job or shares.
    @Test func randomInstancesNeverOverlapAndAlwaysStartWhereTheProfileMay() {
        var rng = SplitMix64(seed: 14)
        var s = Self.pool([("h1", 4, .dynamic, []), ("h2", 2, .dynamic, [])])
        let table = Self.h100.mig!
        var placed = 0
        for step in 0..<500 {
            let t = Double(step * 10)
            switch rng.next() % 4 {
            case 0, 1:
                let names = table.profiles.map(\.name)
                let first = names[Int(rng.next() % UInt64(names.count - 1))]
                let second = names[Int(rng.next() % UInt64(names.count))]
                s.submit(JobSpec.inference(1) { $0.mig = rng.next() % 2 == 0 ? [first] : [first, second] }, at: t)
            case 2:
                if rng.next() % 2 == 0 {
                    s.submit(.inference(1), at: t)
                } else {
                    s.submit(JobSpec.inference(1) { $0.gpuShare = 500 }, at: t)
                }
            default:
                let running = s.activeJobs.sorted().filter { s.jobs[$0]?.state == .running }
                if !running.isEmpty { s.finish(running[Int(rng.next() % UInt64(running.count))], at: t) }
            }
            let pass = s.scheduleAndSettle(at: t)
            placed += s.starts(pass).filter { s.jobs[$0]?.allocation?.mig != nil }.count
            #expect(s.invariantViolations().isEmpty, "step \(step): \(s.invariantViolations())")
            for node in s.nodes {
                for g in 0..<node.spec.gpus {
                    var mask: UInt8 = 0
                    var compute = 0
                    for id in node.sharers[g] {
                        guard let slot = s.jobs[id]?.allocation?.mig else { continue }
                        let p = table.profile(named: slot.profile)!
                        #expect(p.starts.contains(slot.start))
                        #expect(mask & p.mask(at: slot.start) == 0, "step \(step): slices given twice")
                        mask |= p.mask(at: slot.start)
                        compute += p.compute
                    }
                    #expect(compute <= 7 && mask == node.migUsed[g])
                    #expect(mask == 0 || (node.holder[g] == nil && node.shareUsed[g] == 0))
                }
            }
        }
        #expect(placed > 100, "placed \(placed)")
    }

    @Test func aLargerInstanceHoldsTheSlicesThatFreeSoonestAndSmallerOnesTakeTheRest() throws {
        var s = Self.pool([("h1", 1, .dynamic, [])])
        // Seven 1g.10gb instances (placed shortest first); by start: 4 and 6 end at 100, 5 at 200, 0 at 300,
        // 1–3 at 500.
        let ones = [300.0, 100, 200, 100, 500, 500, 500].map { e in
            s.submit(
                JobSpec.inference(1) {
                    $0.mig = ["1g.10gb"]
                    $0.estimate = e
                }
            )
        }
        s.schedule(at: 0)
        #expect(ones.map { s.jobs[$0]!.allocation!.mig!.start } == [0, 6, 5, 4, 1, 2, 3])
        let big = s.submit(Self.mig("3g.40gb"), at: 10)
        let small = (0..<2).map { i in s.submit(Self.mig("1g.10gb"), at: 11 + Double(i)) }
        var pass = s.schedule(at: 20)
        // 3g.40gb starts at 0 or 4: slices 4–7 are free first (at 200), so it holds them.
        #expect(pass.holds.first?.job == big)
        #expect(pass.holds.first?.allocation?.mig == MIGSlot(profile: "3g.40gb", start: 4))
        #expect(pass.holds.first?.from == Instant(seconds: 200))
        // Slices 0, 4 and 6 free early: a smaller instance takes slice 0; 4 and 6 are held.
        s.finish(ones[0], at: 150)
        s.finish(ones[1], at: 150)
        s.finish(ones[3], at: 150)
        pass = s.schedule(at: 150)
        #expect(s.starts(pass) == [small[0]])
        #expect(s.jobs[small[0]]?.allocation?.mig?.start == 0)
        #expect(pass.reason(for: small[1])?.blocker == .reserved(for: big, from: Instant(seconds: 200)))
        let why = try #require(Scheduler(policy: .allot).explain(big, in: s)).lines.joined(separator: "\n")
        #expect(why.contains("holds on h1[0]:3g.40gb@4"), "\(why)")
        // The last instance over 4–7 ends: it starts there.
        s.finish(ones[2], at: 200)
        pass = s.schedule(at: 200)
        #expect(s.starts(pass) == [big])
        #expect(s.jobs[big]?.allocation?.mig == MIGSlot(profile: "3g.40gb", start: 4))
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func aMIGReplicaTakesALoanOfTheInferenceReserveBack() throws {
        var s = Self.pool([("h1", 2, .dynamic, [])])
        var config = s.config
        config.inferenceReserve = [InferenceReserve(gpuModel: "H100-80GB", gpus: 2)]
        try s.apply(Event(time: .zero, .configApplied(config: config)))
        let loans = (0..<2).map { _ in s.submit(.training(1)) }
        s.schedule(at: 0)
        #expect(loans.allSatisfy { s.jobs[$0]?.loans == [.inferenceReserve(model: "H100-80GB")] })
        let replica = s.submit(Self.mig("1g.10gb"), at: 10)
        let pass = s.schedule(at: 10)
        #expect(s.preemptions(pass).count == 1)
        #expect(s.preemptions(pass).first?.reason == .inference)
        #expect(pass.reason(for: replica)?.blocker == .waitingForPreemption(victims: 1))
    }

    @Test func aMIGJobPreemptsAWholeGPUJobOfALowerClassAndStartsWhenItHasGone() throws {
        var s = Self.pool([("h1", 1, .dynamic, [])])
        let train = s.submit(.training(1), at: 0)
        s.schedule(at: 0)
        let serve = s.submit(Self.mig("3g.40gb"), at: 1000)
        let pass = s.schedule(at: 1000)
        #expect(s.preemptions(pass).map(\.victim) == [train])
        #expect(s.preemptions(pass).first?.reason == .priority)
        #expect(pass.reason(for: serve)?.blocker == .waitingForPreemption(victims: 1))
        // While it stops, later passes wait for it and pick no one else.
        let again = s.schedule(at: 1010)
        #expect(s.preemptions(again).isEmpty)
        #expect(again.reason(for: serve)?.blocker == .waitingForPreemption(victims: 1))
        s.finish(train, code: 143, at: 1020)
        let start = s.schedule(at: 1020)
        #expect(s.starts(start).contains(serve), "\(String(describing: start.reason(for: serve))) \(start.decisions)")
        #expect(s.jobs[serve]?.allocation?.mig?.profile == "3g.40gb")
        // The training job waits again; it does not take the GPU back from the instance.
        #expect(s.jobs[train]?.state == .pending)
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func aMIGJobPreemptsOnlyTheInstancesOverOneStartTheCheapestFirst() throws {
        var s = Self.pool([("h1", 1, .dynamic, [])])
        let old = s.submit(.training(1) { $0.mig = ["3g.40gb"] }, at: 0)
        s.schedule(at: 0)
        let young = s.submit(.training(1) { $0.mig = ["3g.40gb"] }, at: 500)
        s.schedule(at: 500)
        #expect(s.jobs[old]?.state == .running && s.jobs[young]?.state == .running)
        // Half the GPU is enough: the instance with less work at risk goes, the other runs on.
        let serve = s.submit(Self.mig("3g.40gb"), at: 1000)
        let pass = s.schedule(at: 1000)
        #expect(s.preemptions(pass).map(\.victim) == [young])
        s.finish(young, code: 143, at: 1010)
        s.schedule(at: 1010)
        #expect(s.jobs[serve]?.state == .running)
        #expect(s.jobs[old]?.state == .running)
        // The whole GPU's memory takes both instances beside it... of which only the training one may go.
        let big = s.submit(Self.mig("7g.80gb"), at: 2000)
        let none = s.schedule(at: 2000)
        #expect(s.preemptions(none).isEmpty, "the inference instance is not a victim of its own class")
        guard case .noMIGRoom? = none.reason(for: big)?.blocker else {
            Issue.record("\(String(describing: none.reason(for: big)))")
            return
        }
        s.finish(serve, at: 2100)
        let both = s.schedule(at: 2100)
        #expect(s.preemptions(both).map(\.victim) == [old])
        #expect(s.invariantViolations().isEmpty)
    }
}
