import Testing

@testable import AllotCore

/// Ended jobs taken out of the state after their retention: their use stays counted, nothing else moves.
@Suite struct ArchiveTests {
    @Test func archivingTakesEndedJobsOutAndKeepsTheirUse() throws {
        var s = ClusterState.fixture(models: [.a100], nodes: [("n1", "A100", 4, [])])
        var ids: [JobID] = []
        for i in 0..<3 {
            ids.append(
                s.submit(
                    .training(1) {
                        $0.user = "alice"; $0.name = "j\(i)"
                    },
                    at: 0
                )
            )
        }
        s.schedule(at: 0)
        for id in ids { s.finish(id, code: 0, at: 3600) }
        let waiting = s.submit(.training(1), at: 3600, held: true)
        let cost = ids.reduce(0.0) { $0 + s.jobs[$1]!.pastCostUSD }
        #expect(cost > 0)
        // Only ended jobs; all or nothing.
        #expect(throws: StateError.self) {
            try s.apply(Event(time: Instant(seconds: 7200), .jobsArchived(ids: [ids[0], waiting])))
        }
        #expect(s.jobs[ids[0]] != nil)
        try s.apply(Event(time: Instant(seconds: 7200), .jobsArchived(ids: ids)))
        #expect(ids.allSatisfy { s.jobs[$0] == nil } && s.jobs.count == 1)
        #expect(s.archived.jobs == 3 && s.archived.lastEnd == Instant(seconds: 3600))
        let row = try #require(s.archived.rows.first)
        #expect(s.archived.rows.count == 1 && row.key.tenant == "t" && row.key.user == "alice" && row.key.day == 0)
        #expect(abs(row.value.usd - cost) < 1e-9 && row.value.jobs == 3)
        #expect(s.invariantViolations().isEmpty)
        // A snapshot keeps it.
        let back = try ClusterState(image: s.image)
        #expect(back == s && back.archived == s.archived)
        // New ids go on after the archived ones.
        #expect(s.submit(.training(1), at: 7300) == JobID(5))
    }

    @Test func aTableGivesBackEmptiedChunksAndStillIteratesInOrder() {
        var t = JobTable()
        for i in 1...3000 {
            t[JobID(UInt64(i))] = Job(id: JobID(UInt64(i)), spec: JobSpec(), submitTime: .zero, held: false)
        }
        #expect(t.storedChunks == 3)
        for i in 1...1024 { t[JobID(UInt64(i))] = nil }  // the whole first chunk
        #expect(t.storedChunks == 2, "an emptied chunk's memory is given back")
        for i in 2000...2100 { t[JobID(UInt64(i))] = nil }
        #expect(t.count == 3000 - 1024 - 101)
        let ids = t.keys.map(\.rawValue)
        #expect(ids.first == 1025 && ids.last == 3000 && ids == ids.sorted() && !ids.contains(2050))
        #expect(t[JobID(5)] == nil && t[JobID(1500)]?.id == JobID(1500))
        // A chunk given back takes jobs again.
        t[JobID(7)] = Job(id: JobID(7), spec: JobSpec(), submitTime: .zero, held: false)
        #expect(t[JobID(7)] != nil && t.keys.first == JobID(7) && t.storedChunks == 3)
    }
}
