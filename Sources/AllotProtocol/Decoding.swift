import Foundation

extension RPCError {
    /// A decoding error as a sentence naming the field.
    public static func describe(decoding error: any Error) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            let p = keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return p.hasPrefix(".") ? String(p.dropFirst()) : p
        }
        guard let e = error as? DecodingError else { return "\(error)" }
        switch e {
        case .keyNotFound(let key, let ctx):
            let at = path(ctx.codingPath + [key])
            return "\"\(at)\" is missing"
        case .typeMismatch(let type, let ctx):
            return "\"\(path(ctx.codingPath))\" has the wrong type (expected \(Self.typeName(type)))"
        case .valueNotFound(let type, let ctx):
            return "\"\(path(ctx.codingPath))\" is null (expected \(Self.typeName(type)))"
        case .dataCorrupted(let ctx):
            let at = path(ctx.codingPath)
            let why = ctx.debugDescription
            return at.isEmpty ? why : "\"\(at)\": \(why)"
        @unknown default:
            return "\(error)"
        }
    }

    static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        case is Int.Type, is UInt64.Type, is Int32.Type, is Int64.Type: "an integer"
        case is Double.Type: "a number"
        case is [String].Type: "an array of strings"
        default: "\(type)".contains("Dictionary") ? "an object" : "\(type)"
        }
    }
}

/// The agent link's messages, read strictly: a line that is not JSON, names no method or one this side does
/// not take, or whose parameters do not fit the method's type, is an error — answered (an error response
/// without an id) and logged by the reader, never dropped in silence.
public enum AgentMessage {
    /// The line's head: its method, or the error the other side answered with.
    public static func head(_ line: Data) throws(RPCError) -> ResponseHead {
        do {
            return try JSONDecoder().decode(ResponseHead.self, from: line)
        } catch {
            if (try? JSONSerialization.jsonObject(with: line)) == nil {
                throw RPCError(RPCError.parseError, "the message is not JSON: \(RPCError.describe(decoding: error))")
            }
            throw RPCError(RPCError.invalidRequest, "not a JSON-RPC 2.0 message: \(RPCError.describe(decoding: error))")
        }
    }

    /// A notification's parameters as the method's type.
    public static func params<P: Decodable>(_ type: P.Type, of method: String, _ line: Data) throws(RPCError) -> P {
        let p: P?
        do {
            p = try JSONDecoder().decode(RequestParams<P>.self, from: line).params
        } catch {
            throw RPCError.invalidParams("\(method): \(RPCError.describe(decoding: error))")
        }
        guard let p else { throw RPCError.invalidParams("\(method): \"params\" is missing") }
        return p
    }

    /// A notification's parameters as its descriptor's type.
    public static func params<P>(_ n: RPCNotification<P>, _ line: Data) throws(RPCError) -> P {
        try params(P.self, of: n.name, line)
    }

    /// An unknown method.
    public static func unknown(_ method: String?) -> RPCError {
        RPCError(
            RPCError.methodNotFound,
            method.map { "no method \"\($0)\" on the agent link" } ?? "the message has no \"method\""
        )
    }

    /// The error answer to send back for a message that could not be taken.
    public static func errorLine(_ error: RPCError) -> Data {
        (try? ControlProtocol.line(ErrorResponse(id: nil, error: error))) ?? Data()
    }
}
