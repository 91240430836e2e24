import Testing

@testable import AllotCore

/// `--dependency`: jobs that start only after others, as Slurm's afterok, afterany, afternotok, after and
/// singleton.
@Suite struct DependencyTests {
    typealias C = ControllerTests

    static func job(_ deps: String, name: String = "j", uid: UInt32 = 1000) -> JobSpec {
        guard case .success(let d) = Dependency.parse(deps) else { fatalError("bad dependency \(deps)") }
        return JobSpec.training(1) {
            $0.name = name
            $0.uid = uid
            $0.dependencies = d
        }
    }

    static func submit(_ c: inout Controller, _ spec: JobSpec, at t: Double) -> JobID {
        let id = c.state.nextJobID
        _ = c.step(.submit([Controller.Submission(spec: spec, held: false)]), at: C.at(t))
        return id
    }

    static func end(_ c: inout Controller, _ id: JobID, code: Int32, at t: Double) -> Controller.Output {
        c.step(
            .runEnded(Controller.RunEnd(id: id, run: c.state.jobs[id]!.runs, exit: .exited(code: code))),
            at: C.at(t)
        )
    }

    @Test func theTextIsSlurms() throws {
        #expect(
            try Dependency.parse("afterok:12:13,afterany:14,singleton").get() == [
                Dependency(.afterok, [12, 13]), Dependency(.afterany, [14]), Dependency(.singleton),
            ]
        )
        #expect(Dependency.text(try Dependency.parse(" afternotok:3 , after:4 ").get()) == "afternotok:3,after:4")
        for (bad, says) in [
            ("afterok", "name the jobs"), ("afterok:x", "\"x\" is not a job id"), ("aftrok:1", "the conditions are"),
            ("afterok:1?afterany:2", "not supported"), ("singleton:3", "names no jobs"), ("after:1+5", "delay"),
            ("afterok:0", "not a job id"),
        ] {
            guard case .failure(let e) = Dependency.parse(bad) else {
                Issue.record("\(bad) was accepted")
                continue
            }
            #expect(e.message.contains(says), "\(bad): \(e.message)")
        }
    }

    /// A chain runs in order; a failed parent ends its afterok child with the reason, which ends the
    /// child's own afterok child, while an afternotok child runs.
    @Test func aChainRunsInOrderAndAFailureCancelsWhatNeededItsSuccess() throws {
        var c = C.pool()
        let a = Self.submit(&c, .training(8), at: 1)
        let b = Self.submit(&c, Self.job("afterok:\(a)"), at: 1)
        let cc = Self.submit(&c, Self.job("afterok:\(b)"), at: 1)
        let rescue = Self.submit(&c, Self.job("afternotok:\(b)"), at: 1)
        let any = Self.submit(&c, Self.job("afterany:\(b)"), at: 1)
        #expect(c.state.waitingForDependencies == [b, cc, rescue, any])
        #expect(c.state.jobs(in: .pending).map(\.id) == [a, b, cc, rescue, any])
        let first = c.step(.pass, at: C.at(2))
        #expect(first.effects.contains(.start(a, run: 1)) && first.effects.count == 2)
        #expect(c.state.dependencyBlocker(of: b) == .dependency("afterok:\(a): job \(a) is running"))
        _ = Self.end(&c, a, code: 0, at: 10)
        #expect(c.state.waitingForDependencies == [cc, rescue, any])
        _ = c.step(.pass, at: C.at(11))
        #expect(c.state.jobs[b]?.state == .running)
        let out = Self.end(&c, b, code: 3, at: 20)
        // cc is cancelled by allot, saying why; rescue and any may start.
        #expect(c.state.jobs[cc]?.state == .cancelled)
        #expect(
            c.state.jobs[cc]?.note == "its dependency can never be met: afterok:\(b): job \(b) failed (exit code 3)"
        )
        #expect(out.effects.contains(.ended(cc)))
        #expect(out.events.contains { $0.body == .jobCancelled(id: cc, by: nil, grace: 0) })
        #expect(c.state.waitingForDependencies.isEmpty)
        _ = c.step(.pass, at: C.at(21))
        #expect(c.state.jobs[rescue]?.state == .running && c.state.jobs[any]?.state == .running)
        #expect(c.state.invariantViolations().isEmpty)
    }

    @Test func keptJobsSayTheirDependencyCanNeverBeMet() {
        var c = C.pool()
        var rules = Controller.Settings()
        rules.onDependencyNeverMet = .keep
        _ = c.step(.settings(rules), at: C.at(0))
        let a = Self.submit(&c, .training(1), at: 1)
        let b = Self.submit(&c, Self.job("afterok:\(a)"), at: 1)
        _ = c.step(.pass, at: C.at(2))
        _ = c.step(.cancel(a, by: 1000), at: C.at(3))
        _ = Self.end(&c, a, code: 143, at: 4)
        #expect(c.state.jobs[b]?.state == .pending)
        guard case .dependencyNeverMet(let why)? = c.state.dependencyBlocker(of: b) else {
            Issue.record("job \(b) is not told that its dependency can never be met")
            return
        }
        #expect(why == "afterok:\(a): job \(a) cancelled (exit code 143)")
        let lines = c.scheduler.explain(b, in: c.state)?.lines ?? []
        #expect(lines.first?.contains("can never be met") == true)
        // Cancelling it by hand works as for any pending job.
        _ = c.step(.cancel(b, by: 1000), at: C.at(5))
        #expect(c.state.jobs[b]?.state == .cancelled && c.state.waitingForDependencies.isEmpty)
    }

    /// `after` waits for the start only; a held child is looked at again when released.
    @Test func afterWaitsForTheStartAndHeldChildrenWaitTheirTurn() {
        var c = C.pool()
        let a = Self.submit(&c, .training(1), at: 1)
        let b = Self.submit(&c, Self.job("after:\(a)"), at: 1)
        _ = c.step(.hold(b), at: C.at(1))
        _ = c.step(.pass, at: C.at(2))
        #expect(c.state.jobs[a]?.state == .running && c.state.jobs[b]?.state == .held)
        _ = c.step(.release(b), at: C.at(3))
        #expect(c.state.pendingJobs.contains(b))
        _ = c.step(.pass, at: C.at(4))
        #expect(c.state.jobs[b]?.state == .running)
    }

    /// singleton: one job at a time per user and name, in submit order; other users and names are not held
    /// back.
    @Test func singletonsRunOneAtATimePerUserAndName() {
        var c = C.pool()
        let first = Self.submit(&c, Self.job("", name: "sweep"), at: 1)
        let s1 = Self.submit(&c, Self.job("singleton", name: "sweep"), at: 1)
        let s2 = Self.submit(&c, Self.job("singleton", name: "sweep"), at: 1)
        let other = Self.submit(&c, Self.job("singleton", name: "sweep", uid: 1001), at: 1)
        let otherName = Self.submit(&c, Self.job("singleton", name: "eval"), at: 1)
        _ = c.step(.pass, at: C.at(2))
        #expect(c.state.activeJobs == [first, other, otherName])
        #expect(c.state.waitingForDependencies == [s1, s2])
        _ = Self.end(&c, first, code: 1, at: 5)
        _ = c.step(.pass, at: C.at(6))
        #expect(c.state.jobs[s1]?.state == .running && c.state.jobs[s2]?.state == .pending)
        // Only earlier jobs hold a singleton back: a later job of that name (not a singleton) starts.
        let later = Self.submit(&c, Self.job("", name: "sweep"), at: 7)
        _ = c.step(.pass, at: C.at(7))
        #expect(c.state.jobs[later]?.state == .running && c.state.jobs[s2]?.state == .pending)
        _ = Self.end(&c, s1, code: 0, at: 8)
        _ = c.step(.pass, at: C.at(9))
        #expect(c.state.jobs[s2]?.state == .running)
        #expect(c.state.invariantViolations().isEmpty)
    }

    /// A state rebuilt from its log or from a snapshot image waits for the same jobs.
    @Test func theLogAndTheImageGiveTheSameWaitingJobs() throws {
        var c = C.pool()
        var log: [Event] = []
        func step(_ input: Controller.Input, _ t: Double) { log += c.step(input, at: C.at(t)).events }
        let a = c.state.nextJobID
        step(.submit([.init(spec: .training(8), held: false)]), 1)
        step(.submit([.init(spec: Self.job("afterok:\(a)"), held: false)]), 1)
        step(.submit([.init(spec: Self.job("singleton", name: "s"), held: false)]), 1)
        step(.submit([.init(spec: Self.job("singleton", name: "s"), held: false)]), 1)
        step(.pass, 2)
        #expect(c.state.waitingForDependencies.count == 2)
        var replayed = ClusterState.fixture(nodes: [("n1", "H100", 4, []), ("n2", "H100", 4, [])])
        try replayed.apply(log)
        #expect(replayed == c.state)
        #expect(replayed.waitingForDependencies == c.state.waitingForDependencies)
        let image = try ClusterState(image: c.state.image)
        #expect(image.waitingForDependencies == c.state.waitingForDependencies)
        #expect(image.pendingJobs == c.state.pendingJobs)
    }

    /// The state refuses a dependency on a job that does not exist (or is not earlier).
    @Test func aDependencyOnNoJobIsRefused() {
        var s = ClusterState.fixture(nodes: [("n1", "H100", 4, [])])
        let e = Event(time: Instant(seconds: 1), .jobSubmitted(id: 1, spec: Self.job("afterok:5"), held: false))
        #expect(throws: StateError.self) { try s.apply(e) }
        #expect(s.jobs.isEmpty)
    }
}

/// Job arrays: tasks past the array's limit wait out of the queue; one takes the place of each task that
/// ends.
@Suite struct JobArrayTests {
    typealias C = ControllerTests

    @Test func theIndicesAreSlurms() throws {
        #expect(try ArrayIndices.parse("0-4").get() == ArrayIndices(indices: [0, 1, 2, 3, 4], limit: 0))
        #expect(try ArrayIndices.parse("0-9:3%2").get() == ArrayIndices(indices: [0, 3, 6, 9], limit: 2))
        #expect(try ArrayIndices.parse("7,1,3-4").get().indices == [1, 3, 4, 7])
        #expect(try ArrayIndices.parse("0-99999").get().indices.count == 100_000)
        for bad in ["", "5-1", "a", "0-9%0", "0-9:0", "0-100000", "-3", "1,,2"] {
            #expect(throws: RequestTextError.self, "\(bad)") { try ArrayIndices.parse(bad).get() }
        }
    }

    static func submitArray(_ c: inout Controller, _ n: Int, limit: Int, at t: Double) -> [JobID] {
        let first = c.state.nextJobID
        let tasks = (0..<n).map { i in
            Controller.Submission(
                spec: .training(1) { $0.array = ArrayTask(array: first, index: i * 2, limit: limit) },
                held: false
            )
        }
        _ = c.step(.submit(tasks), at: C.at(t))
        return (0..<n).map { JobID(first.rawValue + UInt64($0)) }
    }

    @Test func atMostTheLimitRunAndEachEndLetsTheNextIn() {
        var c = C.pool()
        let tasks = Self.submitArray(&c, 10, limit: 3, at: 1)
        #expect(c.state.pendingJobs.count == 3 && c.state.waitingForDependencies.count == 7)
        #expect(c.state.dependencyBlocker(of: tasks[5]) == .arrayLimit(array: tasks[0], limit: 3))
        var maxRunning = 0
        var t = 2.0
        while c.state.jobs.contains(where: { !$0.state.isTerminal }) {
            _ = c.step(.pass, at: C.at(t))
            let running = c.state.activeJobs.sorted()
            maxRunning = max(maxRunning, running.count)
            #expect(running.count <= 3)
            // The oldest running task ends.
            if let first = running.first {
                _ = c.step(.runEnded(.init(id: first, run: 1, exit: .exited(code: 0))), at: C.at(t + 1))
            }
            t += 2
            #expect(c.state.invariantViolations().isEmpty)
        }
        #expect(maxRunning == 3)
        #expect(tasks.allSatisfy { c.state.jobs[$0]?.state == .completed })
    }

    @Test func holdingOrCancellingATaskMakesRoomAndTheImageAgrees() throws {
        var c = C.pool()
        var log: [Event] = []
        let first = c.state.nextJobID
        let tasks = (0..<5).map { i in
            Controller.Submission(
                spec: .training(1) { $0.array = ArrayTask(array: first, index: i, limit: 2) },
                held: false
            )
        }
        log += c.step(.submit(tasks), at: C.at(1)).events
        let ids = (0..<5).map { JobID(first.rawValue + UInt64($0)) }
        log += c.step(.hold(ids[0]), at: C.at(2)).events
        #expect(c.state.pendingJobs.contains(ids[2]) && !c.state.pendingJobs.contains(ids[3]))
        log += c.step(.cancel(ids[1], by: nil), at: C.at(3)).events
        #expect(c.state.pendingJobs.contains(ids[3]))
        log += c.step(.release(ids[0]), at: C.at(4)).events
        #expect(c.state.waitingForDependencies == [ids[0], ids[4]])
        log += c.step(.pass, at: C.at(5)).events
        #expect(c.state.activeJobs == [ids[2], ids[3]])
        var replayed = ClusterState.fixture(nodes: [("n1", "H100", 4, []), ("n2", "H100", 4, [])])
        try replayed.apply(log)
        #expect(replayed.waitingForDependencies == c.state.waitingForDependencies)
        let image = try ClusterState(image: c.state.image)
        #expect(image.waitingForDependencies.count == 2 && image.invariantViolations().isEmpty)
    }
}
