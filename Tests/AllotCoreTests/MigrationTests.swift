import Testing

@testable import AllotCore

/// Migration at checkpoints (issue 17): a training job running on a slower model moves to a faster one
/// that came free when the move pays for its stop and restart, holding those GPUs while it stops.
@Suite struct MigrationTests {
    /// One H100 node (speed 2) and one A100 node (speed 1), 8 GPUs each. Job `first` holds the H100s (its
    /// estimate says until 5000 s); job `slow` (7200 reference seconds) started at 10 on the A100s, since
    /// waiting for the H100s would not have paid.
    static func pool(_ tweak: (inout PoolConfig) -> Void = { _ in }) -> (ClusterState, first: JobID, slow: JobID) {
        var s = ClusterState.fixture(
            models: [.h100, .a100],
            nodes: [("h1", "H100", 8, []), ("a1", "A100", 8, [])],
            tweak: {
                $0.scheduler.serviceQueues = []
                tweak(&$0)
            }
        )
        let first = s.submit(.training(8, estimate: 10_000), at: 0)
        s.schedule(at: 0)
        let slow = s.submit(.training(8, estimate: 7200), at: 10)
        let pass = s.schedule(at: 10)
        #expect(s.starts(pass) == [slow] && s.jobs[slow]?.allocation?.model == "A100")
        return (s, first, slow)
    }

    @Test func aJobMovesToTheFasterGPUsThatFreeAndStartsThere() throws {
        var (s, first, slow) = Self.pool()
        s.finish(first, at: 200)
        let pass = s.schedule(at: 200)
        #expect(s.preemptions(pass).map { "\($0.victim) \($0.by) \($0.reason)" } == ["\(slow) \(slow) migration"])
        let job = try #require(s.jobs[slow])
        #expect(job.state == .stopping && job.moves == 1 && job.preemptions == 0)
        #expect(job.heldGPUs.map(\.description) == ["h1[0-7]"])
        let why = try #require(Scheduler(policy: .allot).explain(slow, in: s)).lines.joined(separator: "\n")
        #expect(why.contains("moved to faster GPUs that came free"), "\(why)")
        #expect(why.contains("moving to h1[0-7] (H100)") && why.contains("2× as fast as its A100"), "\(why)")
        // Nothing else takes the held GPUs meanwhile, not even a job that arrives while it stops.
        let other = s.submit(.training(8, estimate: 100_000), at: 205)
        #expect(s.starts(s.schedule(at: 205)).isEmpty)
        s.finish(slow, code: 143, at: 220)
        // It survives a restart of allotd: the held GPUs are in the state's image.
        s = try ClusterState(image: s.image)
        let again = s.schedule(at: 220)
        #expect(Set(s.starts(again)) == [slow, other])
        #expect(s.jobs[slow]?.allocation?.model == "H100" && s.jobs[other]?.allocation?.model == "A100")
        #expect(s.jobs[slow]?.heldGPUs.isEmpty == true)
        let history = try #require(s.jobs[slow]?.history.last)
        #expect(history.ended.contains("moved to faster GPUs"))
    }

    @Test func aJobNearItsEndDoesNotMove() {
        var s = ClusterState.fixture(
            models: [.h100, .a100],
            nodes: [("h1", "H100", 8, []), ("a1", "A100", 8, [])],
            tweak: { $0.scheduler.serviceQueues = [] }
        )
        let first = s.submit(.training(8, estimate: 10_000), at: 0)
        s.schedule(at: 0)
        // 400 s on an A100: at 200 it has about 210 s left, 105 s on an H100 plus the stop and restart.
        let short = s.submit(.training(8, estimate: 400), at: 10)
        s.schedule(at: 10)
        s.finish(first, at: 200)
        let pass = s.schedule(at: 200)
        #expect(s.preemptions(pass).isEmpty && s.jobs[short]?.state == .running)
    }

    @Test func movesAreLimitedAndCanBeTurnedOff() {
        var (s, first, slow) = Self.pool { $0.preemption.maxMoves = 0 }
        s.finish(first, at: 200)
        #expect(s.preemptions(s.schedule(at: 200)).isEmpty && s.jobs[slow]?.state == .running)
    }

    /// With `max_moves = 1` a job that moved from an L4 to an A100 does not move again to an H100 that
    /// frees later; with 2 it does.
    @Test(arguments: [1, 2]) func movesInARowAreBounded(maxMoves: Int) throws {
        var s = ClusterState.fixture(
            models: [.h100, .a100, .l4],
            nodes: [("h1", "H100", 4, []), ("a1", "A100", 4, []), ("l1", "L4", 4, [])],
            tweak: {
                $0.scheduler.serviceQueues = []
                $0.preemption.maxMoves = maxMoves
            }
        )
        let onH100 = s.submit(.training(4, estimate: 100_000), at: 0)
        let onA100 = s.submit(.training(4, estimate: 100_000), at: 0)
        s.schedule(at: 0)
        let mover = s.submit(.training(4, estimate: 20_000), at: 10)
        s.schedule(at: 10)
        #expect(s.jobs[mover]?.allocation?.model == "L4")
        s.finish(onA100, at: 200)
        #expect(s.preemptions(s.scheduleAndSettle(at: 200)).map(\.victim) == [mover])
        s.schedule(at: 201)
        #expect(s.jobs[mover]?.allocation?.model == "A100" && s.jobs[mover]?.moves == 1)
        s.finish(onH100, at: 400)
        let pass = s.schedule(at: 400)
        #expect(s.preemptions(pass).map(\.victim) == (maxMoves > 1 ? [mover] : []))
    }

    @Test func aPendingJobHasThePickBeforeAMove() {
        var (s, first, slow) = Self.pool()
        let waiting = s.submit(.training(8, estimate: 3600), at: 150)
        s.finish(first, at: 200)
        let pass = s.schedule(at: 200)
        #expect(s.starts(pass) == [waiting] && s.preemptions(pass).isEmpty)
        #expect(s.jobs[slow]?.state == .running)
    }

    /// A job that reports checkpoints moves just after one, not in between.
    @Test func aJobThatReportsCheckpointsMovesJustAfterOne() throws {
        var (s, first, slow) = Self.pool()
        try s.apply(Event(time: Instant(seconds: 20), .jobCheckpointed(id: slow)))
        s.finish(first, at: 1000)
        #expect(s.preemptions(s.schedule(at: 1000)).isEmpty)
        try s.apply(Event(time: Instant(seconds: 1100), .jobCheckpointed(id: slow)))
        let pass = s.schedule(at: 1110)
        #expect(s.preemptions(pass).map(\.reason) == [.migration])
    }

    /// A job that is not preemptible, or has a node selection, stays where it is.
    @Test func onlyPreemptibleJobsWithoutNodeSelectionMove() {
        var s = ClusterState.fixture(
            models: [.h100, .a100],
            nodes: [("h1", "H100", 8, []), ("a1", "A100", 4, []), ("a2", "A100", 4, [])],
            tweak: { $0.scheduler.serviceQueues = [] }
        )
        let first = s.submit(.training(8, estimate: 10_000), at: 0)
        s.schedule(at: 0)
        let firm = s.submit(.training(4, estimate: 7200) { $0.preemptible = false }, at: 10)
        let pinned = s.submit(
            .training(4, estimate: 7200) { $0.nodes = NodeSelection(nodes: ["a1", "a2"]) },
            at: 10
        )
        s.schedule(at: 10)
        #expect(s.jobs[firm]?.state == .running && s.jobs[pinned]?.state == .running)
        s.finish(first, at: 200)
        #expect(s.preemptions(s.schedule(at: 200)).isEmpty)
    }

    /// The event and the held GPUs are checked: GPUs are held only for a job moving, and only free ones.
    @Test func heldGPUsAreValidated() throws {
        var (s, first, slow) = Self.pool()
        #expect(throws: StateError.self) {
            try s.apply(
                Event(time: Instant(seconds: 30), .jobGPUsHeld(id: slow, slices: [.init(node: "h1", gpus: [0])]))
            )
        }
        #expect(throws: StateError.self) {
            try s.apply(
                Event(time: Instant(seconds: 30), .jobPreempted(id: slow, by: first, grace: 30, reason: .migration))
            )
        }
        try s.apply(
            Event(time: Instant(seconds: 30), .jobPreempted(id: slow, by: slow, grace: 30, reason: .migration))
        )
        // The H100s are still first's.
        #expect(throws: StateError.self) {
            try s.apply(
                Event(time: Instant(seconds: 30), .jobGPUsHeld(id: slow, slices: [.init(node: "h1", gpus: [0])]))
            )
        }
    }
}
