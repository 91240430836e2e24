import AllotCore
import Foundation
import Testing

@testable import AllotWAL

/// `whenDurable`: what allotd answers clients with, straight from the writer's thread after the sync.
@Suite struct WhenDurableTests {
    static func event(_ i: UInt64) -> Event {
        Event(
            time: Instant(seconds: Double(i)),
            .jobSubmitted(id: JobID(i), spec: JobSpec(tenant: "t", gpus: 1), held: false)
        )
    }

    @Test func callsComeInTicketOrderBeforeWaitersAndAtOnceWhenAlreadyDurable() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-then-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try WriteAheadLog.open(directory: dir, options: .test(.batch))
        defer { log.close() }
        let seen = UnsafeSendableBox<[UInt64]>([])
        var last: WriteAheadLog.Ticket?
        for i in 1...300 {
            let t = try log.enqueue([Self.event(UInt64(i))])
            log.whenDurable(t) { r in seen.withLock { $0.append((try? r.get()) ?? 0) } }
            last = t
        }
        let durable = try await log.waitDurable(try #require(last))
        // Every call ran before the waiter for the last ticket resumed, each with its own LSN, in order.
        #expect(durable == 300)
        #expect(seen.withLock { $0 } == Array(1...300))
        // Already durable: called at once, on this thread.
        log.whenDurable(try #require(last)) { r in seen.withLock { $0.append((try? r.get()) ?? 0) } }
        #expect(seen.withLock { $0.last } == 300)
        #expect(seen.withLock { $0.count } == 301)
    }

    @Test(.enabled(if: DiskFullTests.isRoot, "mounting a tmpfs needs root"))
    func aWriteThatFailsCallsEveryAbandonedTicketWithTheErrorAndNoneTwice() throws {
        try DiskFullTests().withTmpfs(kilobytes: 64) { dir in
            let (log, _) = try WriteAheadLog.open(directory: dir, options: .test(.batch))
            let spec = JobSpec(name: String(repeating: "z", count: 500), tenant: "t", gpus: 1)
            let outcomes = UnsafeSendableBox<[Result<UInt64, WALError>]>([])
            var issued: [UInt64] = []
            var failed = false
            for i in 1...2_000 where !failed {
                let e = Event(
                    time: Instant(seconds: Double(i)),
                    .jobSubmitted(id: JobID(UInt64(i)), spec: spec, held: false)
                )
                guard let t = try? log.enqueue([e]) else { break }
                issued.append(t.lsn)
                let answered = DispatchSemaphore(value: 0)
                log.whenDurable(t) { r in
                    outcomes.withLock { $0.append(r) }
                    answered.signal()
                }
                if i % 20 == 0 {
                    // Let the writer catch up now and then, so that tickets see both outcomes. (Waited for
                    // on this thread, from the writer's: a task would need a thread of the test's pool.)
                    answered.wait()
                    failed = outcomes.withLock { $0.contains { if case .failure = $0 { true } else { false } } }
                }
            }
            log.close()
            #expect(failed, "the disk never filled")
            // Every ticket was answered once.
            #expect(outcomes.withLock { $0.count } == issued.count)
            let failure = outcomes.withLock { $0.compactMap { if case .failure(let e) = $0 { e } else { nil } } }
            #expect(failure.allSatisfy { $0.message.contains("No space left on device") || $0.code == .io })
            // What was answered as durable is in the log.
            let (again, report) = try WriteAheadLog.open(directory: dir, options: .test())
            again.close()
            let acked = outcomes.withLock { $0.compactMap { try? $0.get() } }
            #expect((acked.max() ?? 0) <= report.lastLSN)
        }
    }
}
