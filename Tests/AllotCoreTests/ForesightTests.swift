import Testing

@testable import AllotCore

/// Model choice with foresight (issue 17): a long training job that cannot move later waits for a faster
/// model that frees soon rather than start at once on a slower one; a short one does not. (A job that can
/// move starts at once and moves: MigrationTests.)
@Suite struct ForesightTests {
    /// One H100 node (speed 2) and one A100 node (speed 1), 8 GPUs each; job 1 holds the H100s until 1000 s.
    /// Moves are off, so that every job looks ahead.
    static func pool() -> (ClusterState, JobID) {
        var s = ClusterState.fixture(
            models: [.h100, .a100],
            nodes: [("h1", "H100", 8, []), ("a1", "A100", 8, [])],
            tweak: {
                $0.scheduler.serviceQueues = []
                $0.preemption.maxMoves = 0
            }
        )
        let first = s.submit(.training(8, estimate: 2000), at: 0)
        let pass = s.schedule(at: 0)
        #expect(s.jobs[first]?.allocation?.model == "H100" && s.starts(pass) == [first])
        return (s, first)
    }

    @Test func aLongJobWaitsForTheFasterModelThatFreesSoon() throws {
        var (s, first) = Self.pool()
        // 36,000 s on an A100, 18,000 s on an H100 free at 1000: waiting ends it about 17,100 s sooner.
        let long = s.submit(.training(8, estimate: 36_000), at: 100)
        let pass = s.schedule(at: 100)
        #expect(s.starts(pass).isEmpty)
        let blocker = try #require(pass.reason(for: long)?.blocker)
        guard case .fasterModelSoon(let model, let at, let instead, let saves) = blocker else {
            Issue.record("blocked by \(blocker)")
            return
        }
        #expect(model == "H100" && instead == "A100" && at == Instant(seconds: 1000))
        #expect(abs(saves - 17_100) < 1)
        #expect(pass.reservation?.job == long && pass.reservation?.allocation?.model == "H100")
        let why = try #require(Scheduler(policy: .allot).explain(long, in: s)).lines.joined(separator: "\n")
        #expect(why.contains("waiting for H100 GPUs") && why.contains("rather than starting now on A100"), "\(why)")
        s.finish(first, at: 1000)
        let later = s.schedule(at: 1000)
        #expect(s.starts(later) == [long] && s.jobs[long]?.allocation?.model == "H100")
    }

    @Test func aShortJobStartsAtOnceOnTheSlowerModel() {
        var (s, _) = Self.pool()
        let short = s.submit(.training(8, estimate: 600), at: 100)
        let pass = s.schedule(at: 100)
        #expect(s.starts(pass) == [short] && s.jobs[short]?.allocation?.model == "A100")
    }

    /// The GPUs one job waits for are not promised to the next: it expects them only after the first.
    @Test func theSecondJobDoesNotCountOnTheGPUsTheFirstWaitsFor() {
        var (s, _) = Self.pool()
        let a = s.submit(.training(8, estimate: 36_000), at: 100)
        let b = s.submit(.training(8, estimate: 36_000), at: 101)
        let pass = s.schedule(at: 110)
        #expect(s.starts(pass) == [b] && s.jobs[b]?.allocation?.model == "A100")
        #expect(s.jobs[a]?.state == .pending)
    }

    /// A job that is not preemptible cannot move later: it looks ahead even with moves on.
    @Test func aJobThatCannotMoveLooksAheadWithMovesOn() {
        var s = ClusterState.fixture(
            models: [.h100, .a100],
            nodes: [("h1", "H100", 8, []), ("a1", "A100", 8, [])],
            tweak: { $0.scheduler.serviceQueues = [] }
        )
        s.submit(.training(8, estimate: 2000), at: 0)
        s.schedule(at: 0)
        let firm = s.submit(.training(8, estimate: 36_000) { $0.preemptible = false }, at: 100)
        let movable = s.submit(.training(8, estimate: 36_000), at: 101)
        let pass = s.schedule(at: 110)
        #expect(s.starts(pass) == [movable] && s.jobs[movable]?.allocation?.model == "A100")
        if case .fasterModelSoon? = pass.reason(for: firm)?.blocker {
        } else {
            Issue.record("job \(firm) is blocked by \(String(describing: pass.reason(for: firm)?.blocker))")
        }
    }

    /// Under the baselines, and for a job that prefers the cheapest model, nothing changes.
    @Test func onlyAllotAndTheFastestPreferenceLookAhead() {
        var (s, _) = Self.pool()
        let long = s.submit(.training(8, estimate: 36_000) { $0.prefer = .cheapest }, at: 100)
        #expect(s.starts(s.schedule(at: 100)) == [long])
        var (t, _) = Self.pool()
        let other = t.submit(.training(8, estimate: 36_000), at: 100)
        #expect(t.starts(t.schedule(at: 100, policy: .backfill)) == [other])
    }
}
