import AllotConfig
import AllotCore
import AllotProtocol
import Foundation
import Logging

extension Engine {
    /// Most jobs archived in one round (one append, one event).
    static let archiveBatch = 10_000

    /// How often ended jobs are looked at for archiving: a quarter of the retention, between 1 s and 60 s.
    var archiveInterval: Double { min(60, max(1, settings.jobRetention / 4)) }

    /// Archives the jobs that ended longer than the retention ago: their records to the archive (synced),
    /// then a `jobsArchived` event takes them out of the state. A job array goes once all its tasks ended.
    func archiveEndedJobs(now: Double) {
        guard failure == nil, settings.jobRetention.isFinite, settings.jobRetention > 0 else { return }
        let cutoff = now - settings.jobRetention
        var ids: [JobID] = []
        var records: [(month: String, line: Data)] = []
        var arrayEnded: [JobID: Bool] = [:]
        let encoder = ControlProtocol.encoder()
        for job in state.jobs where job.state.isTerminal {
            let end = job.endTime?.seconds ?? job.submitTime.seconds
            guard end < cutoff else { continue }
            if let task = job.spec.array {
                if arrayEnded[task.array] == nil { arrayEnded[task.array] = arrayHasEnded(task.array) }
                guard arrayEnded[task.array]! else { continue }
            }
            var object = object(job, for: Caller(uid: 0, gid: 0, pid: 0, groups: [], admin: true))
            object.log = job.spec.interactive != nil ? nil : object.log
            guard var line = try? encoder.encode(object) else { continue }
            line.append(10)
            records.append((JobArchive.month(end), line))
            ids.append(job.id)
            if ids.count == Self.archiveBatch { break }
        }
        guard !ids.isEmpty else { return }
        do {
            try archive.append(records)
        } catch {
            logger.error(
                "Ended jobs not archived; they stay in the state",
                metadata: ["error": "\(error)", "archive": "\(archive.directory)"]
            )
            return
        }
        step(.record([.jobsArchived(ids: ids)]))
        churn += ids.count * 4
        logger.info(
            "Jobs archived",
            metadata: [
                "jobs.count": "\(ids.count)", "archive": "\(archive.directory)",
                "ended_before": "\(WireTime.format(cutoff))",
            ]
        )
    }

    /// Whether every task of a job array has ended.
    func arrayHasEnded(_ array: JobID) -> Bool {
        var next = array
        while let task = state.jobs[next], task.spec.array?.array == array {
            if !task.state.isTerminal { return false }
            next = JobID(next.rawValue + 1)
        }
        return true
    }

    /// Archived records for `ls`/`history`: those of a time window (`since`) that reaches back to archived
    /// jobs, that pass the filters; none without a window (`ls` lists the state).
    func archivedRecords(_ p: ListParams, states: Set<JobState>, since: Double, until: Double) -> [JobObject] {
        guard p.since != nil, state.archived.jobs > 0, let lastEnd = state.archived.lastEnd, since <= lastEnd.seconds,
            states.contains(where: \.isTerminal)
        else { return [] }
        let wanted = Set(states.map(\.rawValue))
        return archive.records(since: since, until: until).filter { o in
            guard wanted.contains(o.state) else { return false }
            if let u = p.user, o.user != u && String(o.uid) != u { return false }
            if let t = p.tenant, o.tenant != t { return false }
            if let k = p.kind, o.kind != k { return false }
            if let n = p.name, !Glob.matches(n, o.name) { return false }
            if let n = p.node, o.node != n && !o.gpuIndices.contains(where: { $0.node == n }) { return false }
            if let s = WireTime.parse(o.submitTime), s > until { return false }
            if let e = o.endTime.flatMap(WireTime.parse), e < since { return false }
            return true
        }
    }
}
