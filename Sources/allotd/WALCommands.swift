import AllotCore
import AllotWAL
import ArgumentParser
import Foundation

struct WAL: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal",
        abstract: "Inspect, verify, repair and migrate a state directory's write-ahead log (offline).",
        subcommands: [Dump.self, Verify.self, Repair.self, Load.self, Migrate.self]
    )
}

/// Prints to standard error.
func warn(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

/// One record as `allotd wal dump` prints it.
struct DumpLine: Encodable {
    var lsn: UInt64
    var committed: UInt64
    var segment: String
    var offset: Int
    var event: Event
}

extension WAL {
    struct Dump: AsyncParsableCommand {
        static var encoder: JSONEncoder {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return e
        }

        static let configuration = CommandConfiguration(
            abstract: "Print every record as one JSON object per line.",
            discussion:
                "Each line has lsn, committed, segment, offset and event. Damage stops the dump with a message on standard error and exit code 2. With --etcd, the records of a cluster's log in etcd (segment \"etcd\")."
        )

        @Argument(help: ArgumentHelp("The state directory (holding wal/ and snap/).", valueName: "DIR"))
        var directory: String?

        @OptionGroup var etcd: EtcdOptions

        func validate() throws {
            if (directory == nil) == (etcd.etcd == nil) {
                throw ValidationError("give a state directory, or --etcd URL,… for a log in etcd")
            }
        }

        func run() async throws {
            if etcd.etcd != nil {
                try await dumpEtcd()
                return
            }
            guard let directory else { return }
            let encoder = Self.encoder
            let out = FileHandle.standardOutput
            var buffer = Data()
            let stop: String?
            do {
                stop = try WALInspector.walk(directory: directory) { e in
                    let line = DumpLine(
                        lsn: e.lsn,
                        committed: e.committed,
                        segment: e.segment,
                        offset: e.offset,
                        event: e.event
                    )
                    buffer.append(try! encoder.encode(line))
                    buffer.append(10)
                    if buffer.count > 1 << 16 {
                        out.write(buffer)
                        buffer.removeAll(keepingCapacity: true)
                    }
                }
            } catch {
                warn("allotd: \(error)")
                throw ExitCode(2)
            }
            out.write(buffer)
            if let stop {
                warn("allotd: \(stop)")
                throw ExitCode(2)
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check snapshots and log as recovery would, changing nothing.",
            discussion: "Exit code 0: clean. 1: a torn tail that recovery would cut. 2: damage that stops recovery."
        )

        @Argument(help: ArgumentHelp("The state directory.", valueName: "DIR"))
        var directory: String

        func run() throws {
            let report: RecoveryReport
            do {
                report = try WALInspector.verify(directory: directory)
            } catch {
                print("damaged: \(error)")
                throw ExitCode(2)
            }
            for note in report.notes { print(note) }
            let from = report.snapshotLSN == 0 ? "the start" : "snapshot LSN \(report.snapshotLSN)"
            print(
                "records up to LSN \(report.lastLSN); \(report.replayed) replayed from \(from); \(report.state.jobs.count) jobs, \(report.state.nodes.count) nodes"
            )
            if report.tornTail != nil { throw ExitCode(1) }
        }
    }

    struct Repair: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cut the log at damage before its tail, after saying what is lost.",
            discussion: "Takes the state directory's lock: allotd must not be running."
        )

        @Argument(help: ArgumentHelp("The state directory.", valueName: "DIR"))
        var directory: String

        @Flag(name: .long, help: "Cut without asking.")
        var yes = false

        func run() throws {
            do {
                _ = try WALInspector.verify(directory: directory)
                print("nothing to repair: the log is intact (a torn tail, if any, is cut at the next start)")
                return
            } catch {
                print("damaged: \(error)")
            }
            if !yes {
                print("Cut the log there? Type yes: ", terminator: "")
                guard readLine()?.trimmingCharacters(in: .whitespaces) == "yes" else {
                    print("nothing changed")
                    throw ExitCode(1)
                }
            }
            var options = WriteAheadLog.Options()
            options.repair = true
            options.sync = .never
            do {
                let (log, report) = try WriteAheadLog.open(directory: directory, options: options)
                log.close()
                for note in report.notes { print(note) }
                print("repaired: the log now ends at LSN \(report.lastLSN)")
            } catch {
                warn("allotd: \(error)")
                throw ExitCode(2)
            }
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Append synthetic job submissions as fast as the log takes them (tests and benchmarks).",
            discussion: """
                Opens (recovering) the log in DIR and runs WRITERS concurrent tasks, each submitting jobs one at a \
                time and waiting until its submission is durable. Prints the durable appends per second, and \
                with --print-acks the LSN of every acknowledged append as it happens.
                """
        )

        @Argument(help: ArgumentHelp("The state directory.", valueName: "DIR"))
        var directory: String

        @Option(help: "Concurrent writers.")
        var writers = 16

        @Option(help: "Stop after this many appends in all (0: no limit).")
        var count = 0

        @Option(help: "Stop after this many seconds (0: no limit).")
        var seconds: Double = 0

        @Option(help: "always, batch or never.")
        var sync: WriteAheadLog.SyncPolicy = .batch

        @Option(help: "Segment size in bytes.")
        var segmentSize = 64 << 20

        @Flag(help: "Print each acknowledged LSN on its own line.")
        var printAcks = false

        func run() async throws {
            var options = WriteAheadLog.Options()
            options.sync = sync
            options.segmentSize = segmentSize
            let log: WriteAheadLog
            let report: RecoveryReport
            do {
                (log, report) = try WriteAheadLog.open(directory: directory, options: options)
            } catch {
                warn("allotd: \(error)")
                throw ExitCode(2)
            }
            let owner = Owner(next: report.state.nextJobID.rawValue)
            let clock = ContinuousClock()
            let deadline = seconds > 0 ? clock.now + .seconds(seconds) : nil
            let began = clock.now
            let limit = count
            let acks = await withTaskGroup(of: Int.self) { group in
                for w in 0..<writers {
                    group.addTask {
                        var done = 0
                        while true {
                            if let deadline, clock.now >= deadline { break }
                            guard let ticket = owner.submit(log, writer: w, limit: limit) else { break }
                            do {
                                let lsn = try await log.waitDurable(ticket)
                                if self.printAcks { owner.ack(lsn) }
                                done += 1
                            } catch {
                                warn("allotd: \(error)")
                                break
                            }
                        }
                        return done
                    }
                }
                return await group.reduce(0, +)
            }
            let elapsed = clock.now - began
            log.close()
            let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            warn(
                String(
                    format: "%d durable appends in %.3f s: %.0f appends/s with %d writers (%@)",
                    acks,
                    secs,
                    Double(acks) / secs,
                    writers,
                    sync.rawValue
                )
            )
        }
    }
}

extension WriteAheadLog.SyncPolicy: ExpressibleByArgument {}

/// Hands out job ids and enqueues under one lock, so that the log's order is the ids' order (as the daemon's
/// single state owner does), and prints acknowledgements whole lines at a time.
final class Owner: @unchecked Sendable {
    private let lock = NSLock()
    private var next: UInt64
    private var issued = 0

    init(next: UInt64) { self.next = next }

    func submit(_ log: WriteAheadLog, writer: Int, limit: Int) -> WriteAheadLog.Ticket? {
        lock.lock()
        defer { lock.unlock() }
        if limit > 0 && issued >= limit { return nil }
        let id = JobID(next)
        let spec = JobSpec(name: "load-\(writer)", tenant: "load", uid: 1000, gpus: 1, command: ["true"])
        let event = Event(
            time: Instant(seconds: Date().timeIntervalSince1970),
            .jobSubmitted(id: id, spec: spec, held: false)
        )
        guard let ticket = try? log.enqueue([event]) else { return nil }
        next += 1
        issued += 1
        return ticket
    }

    func ack(_ lsn: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        FileHandle.standardOutput.write(Data("\(lsn)\n".utf8))
    }
}
