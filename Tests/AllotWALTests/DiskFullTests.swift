import AllotCore
import Foundation
import Testing

@testable import AllotWAL

/// A full disk, for real: a small tmpfs. Mounting needs root; the test is skipped otherwise.
@Suite struct DiskFullTests {
    static let isRoot = getuid() == 0

    func withTmpfs(kilobytes: Int, _ body: (String) throws -> Void) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-tmpfs-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=\(kilobytes)k", "tmpfs", dir]
        try mount.run()
        mount.waitUntilExit()
        try #require(mount.terminationStatus == 0, "cannot mount a tmpfs")
        defer {
            let umount = Process()
            umount.executableURL = URL(fileURLWithPath: "/bin/umount")
            umount.arguments = [dir]
            try? umount.run()
            umount.waitUntilExit()
        }
        try body(dir)
    }

    @Test(.enabled(if: isRoot, "mounting a tmpfs needs root"))
    func fullDiskFailsTheAppendKeepsTheLogReadableAndRecoversWhenSpaceReturns() throws {
        try withTmpfs(kilobytes: 96) { dir in
            let (log, _) = try WriteAheadLog.open(directory: dir, options: .test(.always))
            // Fill most of the disk with a file we can delete later.
            let filler = dir + "/filler"
            _ = FileManager.default.createFile(atPath: filler, contents: Data(count: 48 * 1024))
            var acknowledged = 0
            var failure: WALError?
            let big = JobSpec(name: String(repeating: "x", count: 900), tenant: "t", gpus: 1)
            for i in 1...500 {
                let e = Event(
                    time: Instant(seconds: Double(i)),
                    .jobSubmitted(id: JobID(UInt64(i)), spec: big, held: false)
                )
                do throws(WALError) {
                    try log.appendBlocking([e])
                    acknowledged = i
                } catch {
                    failure = error
                    break
                }
            }
            let error = try #require(failure, "the disk never filled")
            #expect(error.code == .io)
            #expect(error.message.contains("No space left on device"))
            #expect(error.message.contains("nothing of this append was kept"))
            #expect(log.failure == nil, "a failed write (not a failed sync) leaves the log usable")
            // Nothing half-written: the segment ends exactly after the last acknowledged record.
            let seg = try segmentPaths(dir)[0]
            let recordSize =
                WALFormat.recordHeaderSize
                + EventCodec.encode(Event(time: Instant(seconds: 1), .jobSubmitted(id: 1, spec: big, held: false)))
                .count
            #expect(try fileSize(seg) == WALFormat.segmentHeaderSize + acknowledged * recordSize)
            // Space comes back: appends go on, without a gap in LSNs.
            try FileManager.default.removeItem(atPath: filler)
            let next = Event(
                time: Instant(seconds: 999),
                .jobSubmitted(id: JobID(UInt64(acknowledged + 1)), spec: big, held: false)
            )
            #expect(try log.appendBlocking([next]) == UInt64(acknowledged + 1))
            log.close()
            let (again, report) = try WriteAheadLog.open(directory: dir, options: .test())
            again.close()
            #expect(report.lastLSN == UInt64(acknowledged + 1))
            #expect(report.state.jobs.count == acknowledged + 1)
            #expect(report.notes.isEmpty)
        }
    }

    @Test(.enabled(if: isRoot, "mounting a tmpfs needs root"))
    func fullDiskDuringGroupCommitFailsEveryWaiterAndLosesNothingAcknowledged() throws {
        try withTmpfs(kilobytes: 64) { dir in
            let (log, _) = try WriteAheadLog.open(directory: dir, options: .test(.batch))
            let spec = JobSpec(name: String(repeating: "y", count: 500), tenant: "t", gpus: 1)
            let results = UnsafeSendableBox<[Result<UInt64, WALError>]>([])
            let nextID = UnsafeSendableBox<UInt64>(1)
            let group = DispatchGroup()
            // Many writers at once; each enqueues one submit under one lock (as the daemon's owner would), then
            // waits for its sync alongside the others.
            for _ in 0..<400 {
                group.enter()
                Thread.detachNewThread {
                    let ticket = nextID.withLock { id -> Result<WriteAheadLog.Ticket, WALError> in
                        let e = Event(
                            time: Instant(seconds: Double(id)),
                            .jobSubmitted(id: JobID(id), spec: spec, held: false)
                        )
                        let t = Result { () throws(WALError) in try log.enqueue([e]) }
                        if case .success = t { id += 1 }
                        return t
                    }
                    let r: Result<UInt64, WALError>
                    switch ticket {
                    case .failure(let e): r = .failure(e)
                    case .success(let t): r = Self.wait(log, t)
                    }
                    results.withLock { $0.append(r) }
                    group.leave()
                }
            }
            group.wait()
            log.close()
            let acked = results.withLock { $0.compactMap { try? $0.get() } }
            let failed = results.withLock { $0.filter { if case .failure = $0 { true } else { false } } }
            #expect(!failed.isEmpty, "the disk never filled")
            let (again, report) = try WriteAheadLog.open(directory: dir, options: .test())
            again.close()
            #expect(report.lastLSN >= UInt64(acked.max() ?? 0))
            #expect(Set(acked).isSubset(of: Set(report.lastLSN >= 1 ? Array(1...report.lastLSN) : [])))
        }
    }
}

extension DiskFullTests {
    /// Waits for a ticket from a plain thread.
    static func wait(_ log: WriteAheadLog, _ t: WriteAheadLog.Ticket) -> Result<UInt64, WALError> {
        let box = UnsafeSendableBox<Result<UInt64, WALError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let r: Result<UInt64, WALError>
            do throws(WALError) { r = .success(try await log.waitDurable(t)) } catch { r = .failure(error) }
            box.withLock { $0 = r }
            done.signal()
        }
        done.wait()
        return box.withLock { $0! }
    }
}

/// A value shared between threads under a lock.
final class UnsafeSendableBox<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ v: T) { value = v }
    func withLock<R>(_ body: (inout T) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}
