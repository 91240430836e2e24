import AllotCore
import Foundation

/// The control protocol: JSON-RPC 2.0, one object per line (docs/protocol.md).
public enum ControlProtocol {
    /// The protocol version this build speaks.
    public static let version = 1
    /// Default largest line, in bytes.
    public static let defaultMaxMessageBytes = 1 << 20

    /// The encoder for every message: compact, sorted keys (stable output for tests and `socat` users).
    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }

    /// One line: the encoded value and a newline.
    public static func line(_ value: some Encodable) throws -> Data {
        var d = try encoder().encode(value)
        d.append(10)
        return d
    }
}

/// A request or response id: JSON-RPC allows numbers and strings.
public enum RPCID: Hashable, Sendable, Codable {
    case number(Int64)
    case string(String)

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Int64.self) {
            self = .number(n)
        } else {
            self = .string(try c.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .number(let n): try c.encode(n)
        case .string(let s): try c.encode(s)
        }
    }
}

/// An error answer: a stable code and a sentence a person can act on.
public struct RPCError: Error, Hashable, Sendable, Codable, CustomStringConvertible {
    public var code: Int
    public var message: String

    public init(_ code: Int, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    public static let parseError = -32700
    public static let invalidRequest = -32600
    public static let methodNotFound = -32601
    public static let invalidParams = -32602
    public static let internalError = -32603
    public static let notFound = -32001
    public static let permissionDenied = -32002
    public static let refused = -32003
    public static let unavailable = -32004
    public static let tooLarge = -32005
    public static let tooManyConnections = -32006
    public static let versionNotSupported = -32007

    public static func invalidParams(_ m: String) -> RPCError { RPCError(invalidParams, m) }
    public static func notFound(_ m: String) -> RPCError { RPCError(notFound, m) }
    public static func denied(_ m: String) -> RPCError { RPCError(permissionDenied, m) }
    public static func refused(_ m: String) -> RPCError { RPCError(refused, m) }
}

/// The parts of a request read before its parameters.
public struct RequestHead: Decodable, Sendable {
    public var jsonrpc: String?
    public var id: RPCID?
    public var method: String?
}

/// A request's parameters, decoded as `P`.
public struct RequestParams<P: Decodable>: Decodable {
    public var params: P?
}

/// A request, as a client sends it.
public struct Request<P: Encodable>: Encodable {
    public var jsonrpc = "2.0"
    public var id: RPCID
    public var method: String
    public var params: P

    public init(id: RPCID, method: String, params: P) {
        self.id = id
        self.method = method
        self.params = params
    }
}

/// A successful answer.
public struct Response<R: Encodable>: Encodable {
    public var jsonrpc = "2.0"
    public var id: RPCID?
    public var result: R

    public init(id: RPCID?, result: R) {
        self.id = id
        self.result = result
    }
}

/// An error answer.
public struct ErrorResponse: Codable, Sendable {
    public var jsonrpc = "2.0"
    public var id: RPCID?
    public var error: RPCError

    public init(id: RPCID?, error: RPCError) {
        self.id = id
        self.error = error
    }
}

/// A message without an id: what streams send.
public struct Notification<P: Encodable>: Encodable {
    public var jsonrpc = "2.0"
    public var method: String
    public var params: P

    public init(method: String, params: P) {
        self.method = method
        self.params = params
    }
}

/// A successful answer as a client reads it, its result decoded as `R`.
public struct ResponseResult<R: Decodable>: Decodable {
    public var result: R
}

/// An answer as a client reads it: the result left as JSON for the caller to decode.
public struct ResponseHead: Decodable, Sendable {
    public var id: RPCID?
    public var method: String?
    public var error: RPCError?
}

/// Parameters of a method that takes none.
public struct NoParams: Codable, Sendable {
    public init() {}
}

/// RFC 3339 times for the wire.
public enum WireTime {
    /// `2026-11-29T09:00:00Z`.
    public static func format(_ epochSeconds: Double) -> String {
        CivilTime.format(epochSeconds).replacingOccurrences(of: " ", with: "T") + "Z"
    }

    /// Parses RFC 3339 (`2026-11-29T09:00:00Z`, with an offset or fractions) or `YYYY-MM-DD HH:MM:SS` (UTC).
    public static func parse(_ text: String) -> Double? {
        if let t = CivilTime.parse(text) { return t }
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        if let d = f.date(from: text) { return d.timeIntervalSince1970 }
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: text)?.timeIntervalSince1970
    }
}
