import AllotProtocol
import Foundation

/// A request, decoded and checked on its connection's task, for the engine to carry out.
enum Call: Sendable {
    enum Change: String, Sendable {
        case cancel, hold, release
    }

    case hello(HelloParams)
    case submit([JobRequest], many: Bool)
    case list(ListParams)
    case show(UInt64)
    case why(UInt64)
    case change(Change, [UInt64])
    case logs(LogsParams)
    case watch
    case nodes
    case drain(NodeParams)
    case resume(NodeParams)
    case status
    case cost(CostParams)
    case reload
    case jobFinished(JobFinishedParams)
    /// A supervisor's report that a run ended (its status file says how).
    case jobExited(JobExitedParams)
    case snapshot

    /// Decodes one line.
    /// - Returns: the request id (when one could be read) and the call, or the error to answer with.
    static func decode(_ line: Data) -> (RPCID?, Result<Call, RPCError>) {
        let decoder = JSONDecoder()
        let head: RequestHead
        do {
            head = try decoder.decode(RequestHead.self, from: line)
        } catch {
            if (try? JSONSerialization.jsonObject(with: line)) == nil {
                return (
                    nil, .failure(RPCError(RPCError.parseError, "the request is not JSON: \(Self.describe(error))"))
                )
            }
            return (
                nil,
                .failure(
                    RPCError(
                        RPCError.invalidRequest,
                        "not a JSON-RPC 2.0 request: \(Self.describe(error)); expected {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":…,\"params\":{…}}"
                    )
                )
            )
        }
        guard head.jsonrpc == "2.0" else {
            return (
                head.id,
                .failure(RPCError(RPCError.invalidRequest, "not a JSON-RPC 2.0 request: \"jsonrpc\" must be \"2.0\""))
            )
        }
        guard let method = head.method else {
            return (head.id, .failure(RPCError(RPCError.invalidRequest, "the request has no \"method\"")))
        }
        func params<P: Decodable>(_ type: P.Type, required: Bool = true) throws(RPCError) -> P? {
            do {
                let p = try decoder.decode(RequestParams<P>.self, from: line).params
                if p == nil && required { throw RPCError.invalidParams("\(method): \"params\" is missing") }
                return p
            } catch let e as RPCError {
                throw e
            } catch {
                throw RPCError.invalidParams("\(method): \(Self.describe(error))")
            }
        }
        do throws(RPCError) {
            let call: Call
            switch method {
            case "hello": call = .hello(try params(HelloParams.self, required: false) ?? HelloParams())
            case "submit": call = .submit([try params(SubmitParams.self)!.job], many: false)
            case "submit_many":
                let jobs = try params(SubmitManyParams.self)!.jobs
                guard !jobs.isEmpty else { throw RPCError.invalidParams("submit_many: \"jobs\" is empty") }
                call = .submit(jobs, many: true)
            case "list": call = .list(try params(ListParams.self, required: false) ?? ListParams())
            case "show": call = .show(try params(IDParams.self)!.id)
            case "why": call = .why(try params(IDParams.self)!.id)
            case "cancel", "hold", "release":
                let ids = try params(IDsParams.self)!.ids
                guard !ids.isEmpty else { throw RPCError.invalidParams("\(method): \"ids\" is empty") }
                call = .change(Change(rawValue: method)!, ids)
            case "logs": call = .logs(try params(LogsParams.self)!)
            case "watch": call = .watch
            case "nodes": call = .nodes
            case "drain": call = .drain(try params(NodeParams.self)!)
            case "resume": call = .resume(try params(NodeParams.self)!)
            case "status": call = .status
            case "cost": call = .cost(try params(CostParams.self, required: false) ?? CostParams())
            case "reload": call = .reload
            case "job_finished": call = .jobFinished(try params(JobFinishedParams.self)!)
            case "job_exited": call = .jobExited(try params(JobExitedParams.self)!)
            case "snapshot": call = .snapshot
            default:
                throw RPCError(
                    RPCError.methodNotFound,
                    "no method \"\(method)\"; see docs/protocol.md for the methods of protocol version \(ControlProtocol.version)"
                )
            }
            return (head.id, .success(call))
        } catch {
            return (head.id, .failure(error))
        }
    }

    /// A decoding error as a sentence naming the field.
    static func describe(_ error: any Error) -> String { RPCError.describe(decoding: error) }
}

/// Params of `job_exited` (internal: sent by a job's supervisor).
struct JobExitedParams: Codable, Sendable {
    var id: UInt64
    var run: Int
}
