import AllotCore
import AllotProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The records of jobs that ended longer ago than `[daemon] job_retention`, taken out of the state (as
/// sacct's database keeps what slurmctld forgets): one JSON line per job (its `show --json` object, full)
/// in `STATE_DIR/archive/jobs-YYYY-MM.jsonl` by the month it ended. Lines are written and synced before the
/// `jobsArchived` event that takes the jobs out of the state, so a crash in between writes a job twice,
/// never loses it; readers keep one line per job.
struct JobArchive {
    let directory: String

    init(stateDir: String) { directory = stateDir + "/archive" }

    func file(month: String) -> String { "\(directory)/jobs-\(month).jsonl" }

    /// `2026-12` for a time.
    static func month(_ seconds: Double) -> String { String(WireTime.format(seconds).prefix(7)) }

    /// Appends the jobs' records and syncs them.
    func append(_ records: [(month: String, line: Data)]) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var byMonth: [String: Data] = [:]
        for r in records { byMonth[r.month, default: Data()].append(r.line) }
        for (month, data) in byMonth.sorted(by: { $0.key < $1.key }) {
            let path = file(month: month)
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            defer { close(fd) }
            try data.withUnsafeBytes { raw in
                var off = 0
                while off < raw.count {
                    let n = write(fd, raw.baseAddress! + off, raw.count - off)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
                    off += n
                }
            }
            guard fsync(fd) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        }
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }

    /// The months with a file, oldest first.
    var months: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { n in
            n.hasPrefix("jobs-") && n.hasSuffix(".jsonl") ? String(n.dropFirst(5).dropLast(6)) : nil
        }.sorted()
    }

    /// The records of the months from `since` to `until` (either open), one per job, by id.
    func records(since: Double, until: Double) -> [JobObject] {
        let first = since.isFinite ? Self.month(since) : ""
        let last = until.isFinite ? Self.month(until) : "9999-99"
        var byID: [UInt64: JobObject] = [:]
        let decoder = JSONDecoder()
        for month in months where month >= first && month <= last {
            guard let data = FileManager.default.contents(atPath: file(month: month)) else { continue }
            for line in data.split(separator: 10) {
                if let o = try? decoder.decode(JobObject.self, from: line) { byID[o.id] = o }
            }
        }
        return byID.keys.sorted().map { byID[$0]! }
    }

    /// One job's record, looked for from the newest month back.
    func find(_ id: UInt64) -> JobObject? {
        let needle = Array("\"id\":\(id),".utf8)
        let decoder = JSONDecoder()
        for month in months.reversed() {
            guard let data = FileManager.default.contents(atPath: file(month: month)) else { continue }
            var found: JobObject?
            for line in data.split(separator: 10) where line.count > needle.count {
                guard contains(line, needle) else { continue }
                if let o = try? decoder.decode(JobObject.self, from: line), o.id == id { found = o }
            }
            if let found { return found }
        }
        return nil
    }

    private func contains(_ line: Data.SubSequence, _ needle: [UInt8]) -> Bool {
        line.withUnsafeBytes { raw in
            let n = needle.count
            guard raw.count >= n else { return false }
            var i = 0
            while i <= raw.count - n {
                if raw[i] == needle[0] {
                    var j = 1
                    while j < n && raw[i + j] == needle[j] { j += 1 }
                    if j == n { return true }
                }
                i += 1
            }
            return false
        }
    }
}
