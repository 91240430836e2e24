import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOSSL

/// What went wrong talking to etcd.
public struct EtcdError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The gRPC status code etcd gave (5 not found, 9 failed precondition, 14 unavailable …), or nil when no
    /// member answered.
    public var code: Int?
    public var message: String

    public init(code: Int? = nil, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { code.map { "etcd: \(message) (code \($0))" } ?? "etcd: \(message)" }
}

/// A key and its value as etcd holds them.
public struct EtcdKeyValue: Hashable, Sendable {
    public var key: [UInt8]
    public var value: [UInt8]
    /// The revision that created the key (0: it does not exist).
    public var createRevision: Int64
    public var modRevision: Int64
    public var version: Int64
    /// The lease the key is bound to, or 0.
    public var lease: Int64

    public var keyString: String { String(decoding: key, as: UTF8.self) }
}

/// A comparison in a transaction: the key's create revision, mod revision, version or value against a value.
public struct EtcdCompare: Sendable {
    public enum Target: Sendable {
        case createRevision(Int64)
        case modRevision(Int64)
        case version(Int64)
        case value([UInt8])
    }
    public enum Result: String, Sendable {
        case equal = "EQUAL"
        case greater = "GREATER"
        case less = "LESS"
        case notEqual = "NOT_EQUAL"
    }
    public var key: [UInt8]
    public var result: Result
    public var target: Target

    public init(_ key: String, _ result: Result, _ target: Target) {
        self.key = Array(key.utf8)
        self.result = result
        self.target = target
    }
}

/// An operation in a transaction.
public enum EtcdOp: Sendable {
    case put(key: [UInt8], value: [UInt8], lease: Int64)
    case get(key: [UInt8])
    /// Every key from `from` (inclusive) to `to` (exclusive).
    case deleteRange(from: [UInt8], to: [UInt8])

    public static func put(_ key: String, _ value: [UInt8], lease: Int64 = 0) -> EtcdOp {
        .put(key: Array(key.utf8), value: value, lease: lease)
    }
    public static func get(_ key: String) -> EtcdOp { .get(key: Array(key.utf8)) }
}

/// What a transaction did: whether its comparisons held, the revision after it, and each get's keys.
public struct EtcdTxnResult: Sendable {
    public var succeeded: Bool
    public var revision: Int64
    /// For each operation that ran, in order: the keys a get found (empty for puts and deletes).
    public var found: [[EtcdKeyValue]]
}

/// A change a watch saw.
public struct EtcdEvent: Hashable, Sendable {
    public enum Kind: Sendable { case put, delete }
    public var kind: Kind
    public var kv: EtcdKeyValue
}

/// How to reach an etcd cluster: its members' client URLs, TLS and user.
public struct EtcdEndpoints: Sendable {
    /// `http://127.0.0.1:2379` or `https://…`, one per member.
    public var urls: [String]
    /// Mutual TLS: the CA that signed etcd's certificates, and allot's certificate and key (PEM files).
    public var caFile: String?
    public var certificateFile: String?
    public var keyFile: String?
    /// An etcd user, when etcd's authentication is on.
    public var user: String?
    public var password: String?
    /// How long one request may take before the next member is tried.
    public var timeout: Double = 2

    public init(urls: [String]) { self.urls = urls }
}

/// A client of etcd's v3 API through its JSON gateway (`POST /v3/…` on every member's client URL).
///
/// Requests go to the member that answered last; one that does not answer (refused, timed out, or etcd
/// says it is unavailable) is left for the next, so a lost member costs one timeout. Safe to share.
public final class EtcdClient: Sendable {
    public let endpoints: EtcdEndpoints
    private let http: HTTPClient
    private let state = NIOLockedValueBox(State())

    private struct State {
        var current = 0
        var token: String?
        var shutDown = false
    }

    public init(_ endpoints: EtcdEndpoints) throws(EtcdError) {
        guard !endpoints.urls.isEmpty else { throw EtcdError("no etcd endpoint given") }
        for url in endpoints.urls where !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
            throw EtcdError("\"\(url)\": an etcd endpoint is a URL, as http://127.0.0.1:2379 or https://etcd1:2379")
        }
        self.endpoints = endpoints
        var tls: TLSConfiguration?
        if endpoints.urls.contains(where: { $0.hasPrefix("https://") }) || endpoints.caFile != nil {
            var c = TLSConfiguration.makeClientConfiguration()
            do {
                if let ca = endpoints.caFile {
                    c.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
                }
                if let cert = endpoints.certificateFile, let key = endpoints.keyFile {
                    c.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                    c.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
                }
            } catch {
                throw EtcdError("cannot read the TLS files for etcd: \(error)")
            }
            tls = c
        }
        let timeout = TimeAmount.milliseconds(Int64(endpoints.timeout * 1000))
        http = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: HTTPClient.Configuration(
                tlsConfiguration: tls,
                timeout: .init(connect: timeout, read: nil)
            )
        )
    }

    /// Closes the client's connections.
    public func shutdown() async {
        state.withLockedValue { $0.shutDown = true }
        try? await http.shutdown()
    }

    deinit {
        // Not shut down (a caller that returned early): close in the background; AsyncHTTPClient keeps
        // itself alive until it is done.
        if !state.withLockedValue({ $0.shutDown }) { _ = http.shutdown() }
    }

    // MARK: Keys

    /// Puts a value; returns the revision it made.
    @discardableResult
    public func put(_ key: String, _ value: [UInt8], lease: Int64 = 0) async throws(EtcdError) -> Int64 {
        var body: [String: Any] = ["key": Self.b64(Array(key.utf8)), "value": Self.b64(value)]
        if lease != 0 { body["lease"] = String(lease) }
        return Self.revision(try await call("/v3/kv/put", body))
    }

    /// The key's value, if it exists.
    public func get(_ key: String) async throws(EtcdError) -> EtcdKeyValue? {
        try await range(from: Array(key.utf8), to: nil, limit: 1).kvs.first
    }

    /// Keys from `from` up to `to` (exclusive; nil: just `from`), in key order, at most `limit` (0: all).
    public func range(
        from: [UInt8],
        to: [UInt8]?,
        limit: Int = 0,
        revision: Int64 = 0
    ) async throws(EtcdError) -> (kvs: [EtcdKeyValue], more: Bool, revision: Int64) {
        var body: [String: Any] = ["key": Self.b64(from)]
        if let to { body["range_end"] = Self.b64(to) }
        if limit > 0 { body["limit"] = String(limit) }
        if revision > 0 { body["revision"] = String(revision) }
        let answer = try await call("/v3/kv/range", body)
        let kvs = (answer["kvs"] as? [[String: Any]] ?? []).compactMap(Self.keyValue)
        return (kvs, answer["more"] as? Bool ?? false, Self.revision(answer))
    }

    /// Every key under a prefix, in key order.
    public func prefix(_ prefix: String, limit: Int = 0) async throws(EtcdError) -> [EtcdKeyValue] {
        try await range(from: Array(prefix.utf8), to: Self.prefixEnd(Array(prefix.utf8)), limit: limit).kvs
    }

    /// The key under a prefix with the lowest create revision (the first created still there), if any.
    public func oldest(under prefix: String) async throws(EtcdError) -> EtcdKeyValue? {
        try await first(under: prefix, by: "CREATE", order: "ASCEND", keysOnly: false)
    }

    /// The greatest key under a prefix, without its value, if any.
    public func greatestKey(under prefix: String) async throws(EtcdError) -> EtcdKeyValue? {
        try await first(under: prefix, by: "KEY", order: "DESCEND", keysOnly: true)
    }

    /// The first key under a prefix in etcd's sort (`target`: KEY, CREATE, MOD…; `order`: ASCEND, DESCEND).
    private func first(
        under prefix: String,
        by target: String,
        order: String,
        keysOnly: Bool
    ) async throws(EtcdError)
        -> EtcdKeyValue?
    {
        let key = Array(prefix.utf8)
        let body: [String: Any] = [
            "key": Self.b64(key), "range_end": Self.b64(Self.prefixEnd(key)), "limit": "1", "sort_order": order,
            "sort_target": target, "keys_only": keysOnly,
        ]
        return (try await call("/v3/kv/range", body)["kvs"] as? [[String: Any]] ?? []).compactMap(Self.keyValue).first
    }

    /// Deletes the keys from `from` up to `to` (exclusive; nil: just `from`); returns how many went.
    @discardableResult
    public func delete(from: [UInt8], to: [UInt8]?) async throws(EtcdError) -> Int {
        var body: [String: Any] = ["key": Self.b64(from)]
        if let to { body["range_end"] = Self.b64(to) }
        return Int(try await call("/v3/kv/deleterange", body)["deleted"] as? String ?? "0") ?? 0
    }

    /// A transaction: if every comparison holds, the `then` operations, else the `otherwise` ones; atomically.
    public func txn(
        _ compare: [EtcdCompare],
        then success: [EtcdOp],
        otherwise failure: [EtcdOp] = []
    ) async throws(EtcdError) -> EtcdTxnResult {
        let body: [String: Any] = [
            "compare": compare.map(Self.json), "success": success.map(Self.json), "failure": failure.map(Self.json),
        ]
        let answer = try await call("/v3/kv/txn", body)
        let responses = answer["responses"] as? [[String: Any]] ?? []
        return EtcdTxnResult(
            succeeded: answer["succeeded"] as? Bool ?? false,
            revision: Self.revision(answer),
            found: responses.map { r in
                ((r["response_range"] as? [String: Any])?["kvs"] as? [[String: Any]] ?? []).compactMap(Self.keyValue)
            }
        )
    }

    /// Compacts etcd's history below `revision` (older revisions can no longer be read or watched from).
    public func compact(revision: Int64) async throws(EtcdError) {
        _ = try await call("/v3/kv/compaction", ["revision": String(revision), "physical": false])
    }

    // MARK: Leases

    /// A new lease of `ttl` seconds; returns its id and the TTL etcd granted.
    public func grantLease(ttl: Int) async throws(EtcdError) -> (id: Int64, ttl: Int) {
        let answer = try await call("/v3/lease/grant", ["TTL": String(ttl)])
        guard let id = (answer["ID"] as? String).flatMap({ Int64($0) }) else {
            throw EtcdError("lease grant answered without an ID")
        }
        return (id, Int(answer["TTL"] as? String ?? "0") ?? 0)
    }

    /// Keeps a lease alive once; returns the seconds it has left (0: it is gone).
    public func keepAlive(lease: Int64) async throws(EtcdError) -> Int {
        let answer = try await call("/v3/lease/keepalive", ["ID": String(lease)])
        let result = answer["result"] as? [String: Any] ?? answer
        return Int(result["TTL"] as? String ?? "0") ?? 0
    }

    /// Ends a lease now: its keys go.
    public func revoke(lease: Int64) async throws(EtcdError) {
        do {
            _ = try await call("/v3/lease/revoke", ["ID": String(lease)])
        } catch  where error.code == 5 {
            return  // already gone
        }
    }

    // MARK: Watch

    /// The changes to the keys from `from` to `to` (exclusive; nil: just `from`) from `revision` on, in order,
    /// until the task is cancelled or the member goes (then the stream ends with an error: watch again from
    /// the revision after the last event seen).
    public func watch(
        from: [UInt8],
        to: [UInt8]?,
        revision: Int64
    ) -> AsyncThrowingStream<[EtcdEvent], any Error> {
        var create: [String: Any] = ["key": Self.b64(from), "start_revision": String(revision)]
        if let to { create["range_end"] = Self.b64(to) }
        let data = (try? JSONSerialization.data(withJSONObject: ["create_request": create])) ?? Data()
        let http = self.http
        let urls = endpoints.urls
        let (current, token) = state.withLockedValue { ($0.current, $0.token) }
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    var request = HTTPClientRequest(url: urls[current % urls.count] + "/v3/watch")
                    request.method = .POST
                    request.headers.add(name: "Content-Type", value: "application/json")
                    if let token { request.headers.add(name: "Authorization", value: token) }
                    request.body = .bytes(ByteBuffer(data: data))
                    let response = try await http.execute(request, timeout: .hours(24 * 365))
                    guard response.status == .ok else {
                        throw EtcdError("watch answered HTTP \(response.status.code)")
                    }
                    var pending: [UInt8] = []
                    for try await chunk in response.body {
                        pending += chunk.readableBytesView
                        while let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                            let line = Array(pending[..<nl])
                            pending.removeSubrange(...nl)
                            guard !line.isEmpty,
                                let object = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any]
                            else { continue }
                            if let error = object["error"] as? [String: Any] {
                                throw EtcdError(
                                    code: error["grpc_code"] as? Int,
                                    error["message"] as? String ?? "watch failed"
                                )
                            }
                            let result = object["result"] as? [String: Any] ?? [:]
                            if result["canceled"] as? Bool == true {
                                throw EtcdError(
                                    code: nil,
                                    "watch cancelled: \(result["cancel_reason"] as? String ?? "compacted")"
                                )
                            }
                            let events = (result["events"] as? [[String: Any]] ?? []).compactMap { e -> EtcdEvent? in
                                guard let kv = (e["kv"] as? [String: Any]).flatMap(Self.keyValue) else { return nil }
                                return EtcdEvent(kind: e["type"] as? String == "DELETE" ? .delete : .put, kv: kv)
                            }
                            if !events.isEmpty { continuation.yield(events) }
                        }
                    }
                    throw EtcdError("the watch ended: the member closed it")
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    // MARK: Requests

    /// Posts `body` to `path` on the current member, moving to the next while none answers.
    func call(_ path: String, _ body: [String: Any]) async throws(EtcdError) -> [String: Any] {
        let data: Data
        do { data = try JSONSerialization.data(withJSONObject: body) } catch {
            throw EtcdError("cannot encode the request: \(error)")
        }
        let urls = endpoints.urls
        var lastProblem = "no member answered"
        var authenticated = false
        let start = state.withLockedValue { $0.current }
        var attempt = 0
        while attempt < urls.count {
            let i = (start + attempt) % urls.count
            let token = state.withLockedValue { $0.token }
            do {
                var request = HTTPClientRequest(url: urls[i] + path)
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/json")
                if let token, path != "/v3/auth/authenticate" {
                    request.headers.add(name: "Authorization", value: token)
                }
                request.body = .bytes(ByteBuffer(data: data))
                let response = try await http.execute(
                    request,
                    timeout: .milliseconds(Int64(endpoints.timeout * 1000))
                )
                let bytes = try await response.body.collect(upTo: 64 << 20)
                let object =
                    (try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView))) as? [String: Any] ?? [:]
                if response.status == .ok {
                    state.withLockedValue { $0.current = i }
                    return object
                }
                let code = object["code"] as? Int
                let message =
                    object["message"] as? String ?? object["error"] as? String ?? "HTTP \(response.status.code)"
                // Unavailable (14) or a member without a leader: ask the next one.
                if code == 14 || message.contains("no leader") || message.contains("timed out") {
                    lastProblem = "\(urls[i]): \(message)"
                    attempt += 1
                    continue
                }
                // An expired or missing token: authenticate once, then again from this member.
                if code == 16 || message.contains("invalid auth token") || message.contains("user name is empty"),
                    !authenticated, let user = endpoints.user
                {
                    authenticated = true
                    try await authenticate(user: user, password: endpoints.password ?? "", at: i)
                    continue
                }
                throw EtcdError(code: code, message)
            } catch let e as EtcdError {
                throw e
            } catch {
                lastProblem = "\(urls[i]): \(error)"
                attempt += 1
            }
        }
        throw EtcdError(code: 14, "no etcd member answered (\(lastProblem))")
    }

    private func authenticate(user: String, password: String, at i: Int) async throws(EtcdError) {
        var request = HTTPClientRequest(url: endpoints.urls[i] + "/v3/auth/authenticate")
        request.method = .POST
        do {
            request.body = .bytes(
                ByteBuffer(data: try JSONSerialization.data(withJSONObject: ["name": user, "password": password]))
            )
            let response = try await http.execute(request, timeout: .milliseconds(Int64(endpoints.timeout * 1000)))
            let bytes = try await response.body.collect(upTo: 1 << 20)
            let object = (try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView))) as? [String: Any]
            guard response.status == .ok, let token = object?["token"] as? String else {
                throw EtcdError(
                    code: object?["code"] as? Int,
                    "etcd refused user \(user): \(object?["message"] as? String ?? "HTTP \(response.status.code)")"
                )
            }
            state.withLockedValue { $0.token = token }
        } catch let e as EtcdError {
            throw e
        } catch {
            throw EtcdError(code: 14, "cannot authenticate to etcd: \(error)")
        }
    }

    // MARK: JSON

    static func b64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    static func revision(_ answer: [String: Any]) -> Int64 {
        ((answer["header"] as? [String: Any])?["revision"] as? String).flatMap { Int64($0) } ?? 0
    }

    static func keyValue(_ o: [String: Any]) -> EtcdKeyValue? {
        guard let key = (o["key"] as? String).flatMap({ Data(base64Encoded: $0) }) else { return nil }
        func int(_ name: String) -> Int64 { (o[name] as? String).flatMap { Int64($0) } ?? 0 }
        return EtcdKeyValue(
            key: Array(key),
            value: Array((o["value"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()),
            createRevision: int("create_revision"),
            modRevision: int("mod_revision"),
            version: int("version"),
            lease: int("lease")
        )
    }

    static func json(_ c: EtcdCompare) -> [String: Any] {
        var o: [String: Any] = ["key": b64(c.key), "result": c.result.rawValue]
        switch c.target {
        case .createRevision(let r):
            o["target"] = "CREATE"
            o["create_revision"] = String(r)
        case .modRevision(let r):
            o["target"] = "MOD"
            o["mod_revision"] = String(r)
        case .version(let v):
            o["target"] = "VERSION"
            o["version"] = String(v)
        case .value(let v):
            o["target"] = "VALUE"
            o["value"] = b64(v)
        }
        return o
    }

    static func json(_ op: EtcdOp) -> [String: Any] {
        switch op {
        case .put(let key, let value, let lease):
            var p: [String: Any] = ["key": b64(key), "value": b64(value)]
            if lease != 0 { p["lease"] = String(lease) }
            return ["request_put": p]
        case .get(let key):
            return ["request_range": ["key": b64(key)]]
        case .deleteRange(let from, let to):
            return ["request_delete_range": ["key": b64(from), "range_end": b64(to)]]
        }
    }

    /// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
    public static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]
    }
}
