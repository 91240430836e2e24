import AllotProtocol
import Foundation

/// A request, decoded and checked on its connection's task, for the engine to carry out.
enum Call: Sendable {
    enum Change: String, Sendable {
        case cancel, hold, release, requeue, checkpoint
    }

    case hello(HelloParams)
    case submit([JobRequest], many: Bool, requestID: String?)
    case list(ListParams)
    case show(JobRef)
    case why(JobRef)
    case change(Change, [JobRef])
    case update(UpdateParams)
    case logs(LogsParams)
    case watch
    /// Relay a running interactive job's terminal on an agent's node over this connection.
    case attach(JobRef)
    case nodes
    case drain(NodeParams)
    case resume(NodeParams)
    case status
    case top(TopParams)
    case cost(CostParams)
    case reload
    case jobFinished(JobFinishedParams)
    /// A supervisor's report that a run ended (its status file says how).
    case jobExited(JobExitedParams)
    case snapshot
    case serviceCreate(ServiceCreateParams)
    case serviceList
    case serviceShow(String)
    case serviceScale(ServiceScaleParams)
    case serviceDelete(String)
    case serviceEndpoints(String)
    case serviceDemand(ServiceDemandParams)
    case serviceUpdate(ServiceCreateParams)

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
        func params<P, R>(_ m: RPCMethod<P, R>, required: Bool = true) throws(RPCError) -> P? {
            try params(P.self, required: required)
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
            case Methods.hello.name: call = .hello(try params(Methods.hello, required: false) ?? HelloParams())
            case Methods.submit.name:
                let p = try params(Methods.submit)!
                call = .submit([p.job], many: false, requestID: p.requestID)
            case Methods.submitMany.name:
                let p = try params(Methods.submitMany)!
                guard !p.jobs.isEmpty else { throw RPCError.invalidParams("submit_many: \"jobs\" is empty") }
                call = .submit(p.jobs, many: true, requestID: p.requestID)
            case Methods.list.name: call = .list(try params(Methods.list, required: false) ?? ListParams())
            case Methods.show.name: call = .show(try params(Methods.show)!.id)
            case Methods.why.name: call = .why(try params(Methods.why)!.id)
            case Methods.update.name: call = .update(try params(Methods.update)!)
            case Methods.cancel.name, Methods.hold.name, Methods.release.name, Methods.requeue.name,
                Methods.checkpoint.name:
                let ids = try params(Methods.cancel)!.ids
                guard !ids.isEmpty else { throw RPCError.invalidParams("\(method): \"ids\" is empty") }
                call = .change(Change(rawValue: method)!, ids)
            case Methods.logs.name: call = .logs(try params(Methods.logs)!)
            case Methods.watch.name: call = .watch
            case Methods.attach.name: call = .attach(try params(Methods.attach)!.id)
            case Methods.nodes.name: call = .nodes
            case Methods.drain.name: call = .drain(try params(Methods.drain)!)
            case Methods.resume.name: call = .resume(try params(Methods.resume)!)
            case Methods.status.name: call = .status
            case Methods.top.name: call = .top(try params(Methods.top, required: false) ?? TopParams())
            case Methods.cost.name: call = .cost(try params(Methods.cost, required: false) ?? CostParams())
            case Methods.reload.name: call = .reload
            case Methods.jobFinished.name: call = .jobFinished(try params(Methods.jobFinished)!)
            case Methods.jobExited.name: call = .jobExited(try params(Methods.jobExited)!)
            case Methods.snapshot.name: call = .snapshot
            case Methods.serviceCreate.name: call = .serviceCreate(try params(Methods.serviceCreate)!)
            case Methods.serviceList.name: call = .serviceList
            case Methods.serviceShow.name: call = .serviceShow(try params(Methods.serviceShow)!.name)
            case Methods.serviceScale.name: call = .serviceScale(try params(Methods.serviceScale)!)
            case Methods.serviceDelete.name: call = .serviceDelete(try params(Methods.serviceDelete)!.name)
            case Methods.serviceEndpoints.name: call = .serviceEndpoints(try params(Methods.serviceEndpoints)!.name)
            case Methods.serviceDemand.name: call = .serviceDemand(try params(Methods.serviceDemand)!)
            case Methods.serviceUpdate.name: call = .serviceUpdate(try params(Methods.serviceUpdate)!)
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
