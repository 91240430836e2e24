import AllotCore
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// One message about a job's moment, for one destination: a webhook's JSON POST or a mail.
struct JobNotice: Sendable {
    enum Destination: Hashable, Sendable {
        case webhook(WebhookURL)
        case mail(String)

        var text: String {
            switch self {
            case .webhook(let u): "http://\(u.host):\(u.port)\(u.path)"
            case .mail(let m): "mail to \(m)"
            }
        }
    }

    var destination: Destination
    /// The same for every try of this notice (receivers may drop repeats): `JOB.RUN.EVENT`.
    var id: String
    var job: JobID
    var event: JobNotify.Event
    /// The webhook's body (JSON), or the mail's text after its headers.
    var body: [UInt8]
    var subject: String
    /// Its file in the spool, once queued there.
    var spooled: String? = nil
}

/// Notices queued and not yet delivered (or given up), one file each in `STATE_DIR/notices`, named by
/// their order: a notice whose event is durable is sent even if allotd stops (or is killed) first — once
/// it is back. (A notice in flight as allotd stops may reach its receiver twice; its id is the same.)
struct NoticeSpool: Sendable {
    let dir: String

    private struct Record: Codable {
        var to: String
        var id: String
        var job: UInt64
        var event: String
        var body: String
        var subject: String
    }

    /// Writes the notice's file (atomically; not synced: a killed allotd keeps it, a lost machine may not).
    /// - Returns: its path, or nil when it could not be written (the notice is still sent).
    func save(_ n: JobNotice, seq: UInt64) -> String? {
        let to: String
        switch n.destination {
        case .webhook: to = n.destination.text
        case .mail(let m): to = "mailto:" + m
        }
        let record = Record(
            to: to,
            id: n.id,
            job: n.job.rawValue,
            event: n.event.rawValue,
            body: Data(n.body).base64EncodedString(),
            subject: n.subject
        )
        guard let data = try? JSONEncoder().encode(record) else { return nil }
        let path = "\(dir)/\(String(format: "%016llu", seq)).json"
        do {
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
            return path
        } catch {
            return nil
        }
    }

    func remove(_ path: String?) {
        if let path { unlink(path) }
    }

    /// The notices left by the last run, in their order, and the number after the last one's; makes the
    /// directory when it is not there.
    func load(logger: Logger) -> (notices: [JobNotice], next: UInt64) {
        try? FileManager.default.createDirectory(
            atPath: dir,
            withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700]
        )
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".json") }
            .sorted()
        var out: [JobNotice] = []
        var next: UInt64 = 1
        for name in names {
            let path = "\(dir)/\(name)"
            if let seq = UInt64(name.dropLast(5)) { next = max(next, seq + 1) }
            guard let data = FileManager.default.contents(atPath: path),
                let r = try? JSONDecoder().decode(Record.self, from: data),
                let event = JobNotify.Event(rawValue: r.event), let body = Data(base64Encoded: r.body)
            else {
                logger.warning("Unreadable job notice in the spool: left out", metadata: ["file": "\(path)"])
                unlink(path)
                continue
            }
            let destination: JobNotice.Destination
            if r.to.hasPrefix("mailto:") {
                destination = .mail(String(r.to.dropFirst(7)))
            } else if let u = WebhookURL(r.to) {
                destination = .webhook(u)
            } else {
                unlink(path)
                continue
            }
            out.append(
                JobNotice(
                    destination: destination,
                    id: r.id,
                    job: JobID(r.job),
                    event: event,
                    body: Array(body),
                    subject: r.subject,
                    spooled: path
                )
            )
        }
        return (out, next)
    }
}

/// Delivers job notices after their events are durable, off the engine's task: each destination has its
/// own queue, delivered in order (a job's begin before its end), a webhook retried with a capped exponential
/// backoff until it answers 2xx (or `maxTries`), so that a receiver that was down gets each notice once it
/// is back. Notices not yet delivered when allotd stops are kept in a spool and sent after it restarts.
final class NoticeSender: Sendable {
    static let maxTries = 10
    /// Seconds before the second try; doubled for each further one, up to `maxDelay`.
    static let firstDelay = 0.5
    static let maxDelay = 60.0
    static let timeout = TimeAmount.seconds(10)

    private let continuation: AsyncStream<JobNotice>.Continuation
    private let stream: AsyncStream<JobNotice>
    let sendmail: String
    let logger: Logger
    let spool: NoticeSpool?
    private let nextSeq: Atomic<UInt64>

    /// - Parameter spool: where notices wait until delivered (nil: not kept across restarts).
    init(sendmail: String, spool: String?, logger: Logger) {
        (stream, continuation) = AsyncStream.makeStream(of: JobNotice.self)
        self.sendmail = sendmail
        self.logger = logger
        self.spool = spool.map(NoticeSpool.init(dir:))
        let left = self.spool?.load(logger: logger) ?? (notices: [], next: 1)
        nextSeq = Atomic(left.next)
        if !left.notices.isEmpty {
            logger.notice(
                "Job notices left by the last run: sending them",
                metadata: ["notices": "\(left.notices.count)"]
            )
        }
        for n in left.notices { continuation.yield(n) }
    }

    /// Queues a notice (never blocks), first in the spool.
    func send(_ notice: JobNotice) {
        var n = notice
        if let spool { n.spooled = spool.save(n, seq: nextSeq.add(1, ordering: .relaxed).oldValue) }
        continuation.yield(n)
    }

    func finish() { continuation.finish() }

    /// Delivers notices until `finish()` (or cancellation).
    func run() async {
        await withDiscardingTaskGroup { group in
            var queues: [JobNotice.Destination: AsyncStream<JobNotice>.Continuation] = [:]
            for await notice in stream {
                if let q = queues[notice.destination] {
                    q.yield(notice)
                    continue
                }
                let (s, c) = AsyncStream.makeStream(of: JobNotice.self)
                queues[notice.destination] = c
                c.yield(notice)
                group.addTask { [self] in
                    for await n in s { await deliver(n) }
                }
            }
            for q in queues.values { q.finish() }
        }
    }

    private func deliver(_ n: JobNotice) async {
        var delay = Self.firstDelay
        for attempt in 1...Self.maxTries {
            let problem: String?
            switch n.destination {
            case .webhook(let url): problem = await post(n, to: url)
            case .mail(let address): problem = await mail(n, to: address)
            }
            guard let problem else {
                spool?.remove(n.spooled)
                logger.debug(
                    "Job notice delivered",
                    metadata: ["job.id": "\(n.job)", "event": "\(n.event.rawValue)", "to": "\(n.destination.text)"]
                )
                return
            }
            if Task.isCancelled { return }  // allotd is stopping: the spool keeps it for the next run
            if attempt == Self.maxTries {
                spool?.remove(n.spooled)
                logger.error(
                    "Job notice given up",
                    metadata: [
                        "job.id": "\(n.job)", "event": "\(n.event.rawValue)", "to": "\(n.destination.text)",
                        "tries": "\(attempt)", "error": "\(problem)",
                    ]
                )
                return
            }
            logger.warning(
                "Job notice not delivered; trying again",
                metadata: [
                    "job.id": "\(n.job)", "event": "\(n.event.rawValue)", "to": "\(n.destination.text)",
                    "try": "\(attempt)", "retry_in_s": "\(delay)", "error": "\(problem)",
                ]
            )
            try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
            delay = min(delay * 2, Self.maxDelay)
        }
    }

    /// POSTs the notice; nil when the receiver answered 2xx, else what went wrong.
    private func post(_ n: JobNotice, to url: WebhookURL) async -> String? {
        do {
            let status = try await HTTPPost.send(
                host: url.host,
                port: url.port,
                path: url.path,
                headers: [("Content-Type", "application/json"), ("X-Allot-Notice", n.id)],
                body: n.body,
                timeout: Self.timeout
            )
            return (200..<300).contains(status) ? nil : "the receiver answered HTTP \(status)"
        } catch {
            return "\(error)"
        }
    }

    /// Hands the mail to the local sendmail; nil when it took it. (Through a shell that writes sendmail's
    /// exit status to a file: allotd reaps every child it has, so it cannot wait for one itself.)
    private func mail(_ n: JobNotice, to address: String) async -> String? {
        guard FileManager.default.isExecutableFile(atPath: sendmail) else {
            return "\(sendmail) is not there (install a mail transfer agent, or set [daemon] sendmail)"
        }
        let text =
            "To: \(address)\nSubject: \(n.subject)\nX-Allot-Notice: \(n.id)\nContent-Type: text/plain; charset=utf-8\n\n"
            + String(decoding: n.body, as: UTF8.self) + "\n"
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allotd-mail-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        do {
            try FileManager.default.createDirectory(
                at: dir,
                withIntermediateDirectories: false,
                attributes: [.posixPermissions: 0o700]
            )
            let message = dir.appendingPathComponent("message").path
            let status = dir.appendingPathComponent("status").path
            let errors = dir.appendingPathComponent("errors").path
            try Data(text.utf8).write(to: URL(fileURLWithPath: message))
            _ = try System.spawnDetached(
                "/bin/sh",
                [
                    "-c", "\"$0\" -t -oi < \"$1\"; echo $? > \"$2.tmp\" && mv \"$2.tmp\" \"$2\"", sendmail, message,
                    status,
                ],
                stdout: errors
            )
            let deadline = System.monotonic() + 60
            while System.monotonic() < deadline {
                if let s = try? String(contentsOfFile: status, encoding: .utf8) {
                    let code = s.trimmingCharacters(in: .whitespacesAndNewlines)
                    if code == "0" { return nil }
                    let err = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
                    return "\(sendmail) exited with \(code): \(err.trimmingCharacters(in: .whitespacesAndNewlines))"
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            return "\(sendmail) did not finish within 60 s"
        } catch {
            return "\(sendmail): \(error)"
        }
    }
}

/// One HTTP/1.1 POST over a fresh connection: the status code of the answer.
enum HTTPPost {
    struct Failed: Error, CustomStringConvertible {
        var description: String
    }

    static func send(
        host: String,
        port: Int,
        path: String,
        headers: [(String, String)],
        body: [UInt8],
        timeout: TimeAmount
    ) async throws -> Int {
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: Int.self)
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(StatusHandler(promise: promise))
                }
            }
            .connect(host: host, port: port).get()
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path)
        head.headers.add(name: "Host", value: port == 80 ? host : "\(host):\(port)")
        head.headers.add(name: "User-Agent", value: "allotd")
        head.headers.add(name: "Content-Length", value: "\(body.count)")
        head.headers.add(name: "Connection", value: "close")
        for (k, v) in headers { head.headers.add(name: k, value: v) }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(Failed(description: "no answer within \(timeout.nanoseconds / 1_000_000_000) s"))
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        return try await promise.futureResult.get()
    }

    /// Completes the promise with the answer's status once the answer has ended (or fails it).
    private final class StatusHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<Int>
        var status: Int?

        init(promise: EventLoopPromise<Int>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch Self.unwrapInboundIn(data) {
            case .head(let h): status = Int(h.status.code)
            case .body: break
            case .end:
                promise.succeed(status ?? 0)
                context.close(promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.fail(error)
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(Failed(description: "the receiver closed the connection without an answer"))
        }
    }
}
