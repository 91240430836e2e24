import AllotCore
import AllotEtcd
import AllotWAL
import ArgumentParser
import Foundation

/// Where a cluster's log lives in etcd (docs/ha.md).
struct EtcdOptions: ParsableArguments {
    @Option(help: ArgumentHelp("etcd's client URLs, comma-separated.", valueName: "URL,…"))
    var etcd: String?

    @Option(help: ArgumentHelp("The cluster's name in etcd: its keys are under /allot/NAME/.", valueName: "NAME"))
    var cluster = "default"

    @Option(help: ArgumentHelp("The CA that signed etcd's certificates (PEM).", valueName: "FILE"))
    var etcdCa: String?

    @Option(help: ArgumentHelp("allot's certificate for etcd (PEM), with --etcd-key.", valueName: "FILE"))
    var etcdCert: String?

    @Option(help: ArgumentHelp("The key of --etcd-cert (PEM).", valueName: "FILE"))
    var etcdKey: String?

    @Option(help: ArgumentHelp("An etcd user, when etcd's authentication is on.", valueName: "NAME"))
    var etcdUser: String?

    @Option(help: ArgumentHelp("A file holding that user's password.", valueName: "FILE"))
    var etcdPasswordFile: String?

    var prefix: String { "/allot/\(cluster)/" }

    func client() throws -> EtcdClient {
        guard let etcd else { throw ValidationError("--etcd: give etcd's client URLs") }
        var e = EtcdEndpoints(urls: etcd.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) })
        e.caFile = etcdCa
        e.certificateFile = etcdCert
        e.keyFile = etcdKey
        e.user = etcdUser
        if let file = etcdPasswordFile {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw ValidationError("--etcd-password-file: cannot read \(file)")
            }
            e.password = text.trimmingCharacters(in: .newlines)
        }
        do { return try EtcdClient(e) } catch { throw ValidationError("--etcd: \(error.message)") }
    }

    func validate() throws {
        if !cluster.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }) || cluster.isEmpty
        {
            throw ValidationError("--cluster: letters, digits, '-', '_' and '.' only, got \"\(cluster)\"")
        }
        if (etcdCert == nil) != (etcdKey == nil) { throw ValidationError("--etcd-cert and --etcd-key go together") }
    }
}

extension WAL {
    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy a state directory's log into etcd, or back (docs/ha.md).",
            discussion: """
                With allotd stopped: copies the newest snapshot of DIR and every record after it into etcd under \
                /allot/CLUSTER/ (the snapshot, then the records by LSN, docs/ha.md), as the cluster's leader for the time of \
                the copy, so that no controller can write beside it. Refused when etcd already holds a log for \
                CLUSTER, or a controller leads it. DIR is not changed.

                With --from-etcd, the way back: copies the cluster's newest snapshot and the records after it from \
                etcd into DIR, which must hold no log, as the cluster's leader for the time of the copy (so stop \
                every controller of CLUSTER first). DIR then recovers to the state the cluster had; etcd is not \
                changed. Point allotd's state_dir at DIR and drop [ha] to run it as a single controller.
                """
        )

        @Argument(help: ArgumentHelp("The state directory (holding wal/ and snap/).", valueName: "DIR"))
        var directory: String

        @Flag(help: "Copy the cluster's log from etcd into DIR (a new or empty state directory).")
        var fromEtcd = false

        @OptionGroup var etcd: EtcdOptions

        func validate() throws {
            if etcd.etcd == nil { throw ValidationError("--etcd: give etcd's client URLs, as http://127.0.0.1:2379") }
        }

        func run() async throws {
            let client = try etcd.client()
            defer { Task { await client.shutdown() } }
            let log = EtcdLog(client: client, prefix: etcd.prefix + "log/")
            do {
                if fromEtcd {
                    try await holdingTheLead(client) { _ in try await copyBack(log) }
                } else {
                    try await copyIn(log, client: client)
                }
            } catch let e as ExitCode {
                throw e
            } catch {
                warn("allotd: \(error)")
                throw ExitCode(1)
            }
        }

        /// Runs `body` as the cluster's leader (refused when a controller leads it), so that nobody writes beside
        /// the copy; resigns after.
        func holdingTheLead(
            _ client: EtcdClient,
            _ body: (EtcdElection.Candidacy) async throws -> Void
        ) async throws {
            let election = EtcdElection(client: client, prefix: etcd.prefix + "leader/")
            if let leader = try await election.leader() {
                warn(
                    "allotd: a controller leads cluster \(etcd.cluster) on etcd (\(String(decoding: leader.value, as: UTF8.self))): stop it first"
                )
                throw ExitCode(1)
            }
            let lease = try await client.grantLease(ttl: 10)
            let keeping = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(3))
                    _ = try? await client.keepAlive(lease: lease.id)
                }
            }
            defer { keeping.cancel() }
            let me = try await election.enter(value: Array("allotd wal migrate".utf8), lease: lease.id)
            guard try await election.leads(me) else {
                try? await client.revoke(lease: lease.id)
                warn("allotd: another controller entered the election of cluster \(etcd.cluster) first: stop it")
                throw ExitCode(1)
            }
            do { try await body(me) } catch {
                try? await election.resign(me)
                try? await client.revoke(lease: lease.id)
                throw error
            }
            try await election.resign(me)
            try? await client.revoke(lease: lease.id)
        }

        /// DIR's log into etcd.
        func copyIn(_ log: EtcdLog, client: EtcdClient) async throws {
            let exported: (snapshot: (lsn: UInt64, bytes: [UInt8])?, records: [(lsn: UInt64, event: Event)])
            do { exported = try PortableLog.export(directory: directory) } catch {
                warn("allotd: \(directory): \(error) (see allotd wal verify)")
                throw ExitCode(2)
            }
            let present = try await log.last()
            let snapshot = try await log.snapshot()
            if present > 0 || snapshot != nil {
                warn(
                    "allotd: etcd already holds the log of cluster \(etcd.cluster) (up to LSN \(present)\(snapshot != nil ? ", and a snapshot" : "")): migrate into a cluster name etcd does not have yet (--cluster)"
                )
                throw ExitCode(1)
            }
            let records = exported.records
            try await holdingTheLead(client) { me in
                if let s = exported.snapshot { try await log.putSnapshot(s.bytes, at: s.lsn, as: me) }
                var i = 0
                while i < records.count {
                    let chunk = records[i..<min(records.count, i + 4096)]
                    try await log.append(chunk.map { PortableLog.encode($0.event) }, from: chunk.first!.lsn, as: me)
                    i += chunk.count
                }
            }
            let last = try await log.last()
            let expected = records.last?.lsn ?? exported.snapshot?.lsn ?? 0
            guard last == (records.isEmpty ? 0 : expected) else {
                warn("allotd: etcd holds records up to LSN \(last), expected \(expected)")
                throw ExitCode(2)
            }
            let what =
                records.isEmpty ? "no records" : "\(records.count) records (LSN \(records.first!.lsn)…\(expected))"
            print(
                "migrated \(what)\(exported.snapshot.map { " and the snapshot at LSN \($0.lsn)" } ?? "") from \(directory) to etcd cluster \(etcd.cluster) (\(etcd.prefix))"
            )
        }

        /// The cluster's log in etcd into DIR.
        func copyBack(_ log: EtcdLog) async throws {
            var snapshot: (lsn: UInt64, bytes: [UInt8])?
            if let bytes = try await log.snapshot() {
                snapshot = (try PortableLog.decodeSnapshot(bytes).lsn, bytes)
            }
            var records: [(lsn: UInt64, payload: [UInt8])] = []
            var next = (snapshot?.lsn ?? 0) + 1
            while true {
                let batch = try await log.read(from: next, limit: 4096).records
                guard let last = batch.last else { break }
                records += batch
                next = last.lsn + 1
            }
            if snapshot == nil && records.isEmpty {
                warn("allotd: etcd holds no log for cluster \(etcd.cluster) (\(etcd.prefix)): nothing to copy")
                throw ExitCode(1)
            }
            let report: RecoveryReport
            do { report = try PortableLog.importLog(directory: directory, snapshot: snapshot, records: records) } catch
            {
                warn("allotd: \(directory): \(error)")
                throw ExitCode(2)
            }
            let what =
                records.isEmpty
                ? "no records" : "\(records.count) records (LSN \(records.first!.lsn)…\(records.last!.lsn))"
            print(
                "migrated \(what)\(snapshot.map { " and the snapshot at LSN \($0.lsn)" } ?? "") from etcd cluster \(etcd.cluster) (\(etcd.prefix)) to \(directory): it recovers to LSN \(report.lastLSN) with \(report.state.jobs.count) jobs"
            )
        }
    }
}

extension WAL.Dump {
    /// The records of a cluster's log in etcd, one JSON line each (as the local dump, segment "etcd").
    func dumpEtcd() async throws {
        let client = try etcd.client()
        defer { Task { await client.shutdown() } }
        let log = EtcdLog(client: client, prefix: etcd.prefix + "log/")
        let encoder = Self.encoder
        var from: UInt64 = 1
        if let snapshot = try? await log.snapshot(), let (lsn, _) = try? PortableLog.decodeSnapshot(snapshot) {
            from = lsn + 1
            warn("allotd: the snapshot in etcd is at LSN \(lsn); the records from LSN \(from)")
        }
        var out = Data()
        while true {
            let batch: [(lsn: UInt64, payload: [UInt8])]
            do { batch = try await log.read(from: from, limit: 4096).records } catch {
                warn("allotd: \(error)")
                throw ExitCode(2)
            }
            if batch.isEmpty { break }
            for r in batch {
                guard let event = try? PortableLog.decode(r.payload) else {
                    FileHandle.standardOutput.write(out)
                    warn("allotd: the record with LSN \(r.lsn) in etcd does not decode")
                    throw ExitCode(2)
                }
                out.append(
                    try encoder.encode(DumpLine(lsn: r.lsn, committed: r.lsn, segment: "etcd", offset: 0, event: event))
                )
                out.append(10)
                from = r.lsn + 1
            }
            FileHandle.standardOutput.write(out)
            out.removeAll(keepingCapacity: true)
        }
    }
}
