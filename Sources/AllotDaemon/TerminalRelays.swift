import AllotProtocol
import Foundation
import Logging
import NIOCore
import Synchronization

/// The terminals of interactive runs on agents' nodes, relayed between the owner's `allotctl run` (on a
/// control connection that `attach` turned into a byte stream) and the run's supervisor (through the
/// agent's link: `agent.tty_open`, `agent.tty_data`, `agent.tty_close`). The frames pass untouched, so the
/// client speaks to a relayed terminal exactly as to a local one.
///
/// Each relay is named by its control connection's number. Input from the client waits until its link has
/// taken it (a fast typist or a piped file slows itself, never the link); output for a client that stops
/// reading is bounded by its outbox, which closes the connection past its limit.
final class TerminalRelays: Sendable {
    static let shared = TerminalRelays()

    private struct Relay {
        let outbox: Outbox
        let link: AgentLink
    }

    private let relays = Mutex<[UInt64: Relay]>([:])

    /// Turns `outbox`'s connection into the terminal of run `ref` on `link`'s node: the connection stops
    /// reading lines, the agent is asked to connect, and `answer` (the `attach` result) goes out, in that
    /// order, so that the client's first frame finds everything in place.
    func open(_ outbox: Outbox, answer: Data, link: AgentLink, run ref: AgentRunRef) {
        relays.withLock { $0[outbox.id] = Relay(outbox: outbox, link: link) }
        outbox.becomeRelay {
            link.send(Self.line(AgentProtocol.ttyOpen.name, AgentTTYOpen(stream: outbox.id, id: ref.id, run: ref.run)))
            outbox.reply(answer)
        }
    }

    /// Bytes from the client, for the run's supervisor.
    func input(_ stream: UInt64, _ bytes: ByteBufferView) async {
        guard let relay = relays.withLock({ $0[stream] }) else { return }
        let line = Self.line(
            AgentProtocol.ttyData.name,
            AgentTTYData(stream: stream, data: Data(bytes).base64EncodedString())
        )
        await relay.link.sendWaiting(line)
    }

    /// Bytes from the supervisor, for the client.
    func output(_ stream: UInt64, link: UInt64, base64: String) {
        guard let relay = relays.withLock({ $0[stream] }), relay.link.id == link,
            let bytes = Data(base64Encoded: base64)
        else { return }
        relay.outbox.send(bytes)
    }

    /// The agent let go of the stream (the run's terminal closed, or it could not be reached): the client's
    /// connection ends once what was sent is out.
    func closedByAgent(_ stream: UInt64, link: UInt64, error: String?, logger: Logger) {
        guard
            let relay = relays.withLock({ r -> Relay? in
                guard r[stream]?.link.id == link else { return nil }
                return r.removeValue(forKey: stream)
            })
        else { return }
        if let error {
            logger.warning(
                "A relayed terminal ended on its agent's side",
                metadata: ["node": "\(relay.link.node)", "error": "\(error)"]
            )
        }
        relay.outbox.finish()
    }

    /// The client's connection ended: the agent lets go of the terminal (the run is hung up on after
    /// `run_hangup` unless a client attaches again).
    func clientGone(_ stream: UInt64) {
        guard let relay = relays.withLock({ $0.removeValue(forKey: stream) }) else { return }
        relay.link.send(Self.line(AgentProtocol.ttyClose.name, AgentTTYClose(stream: stream)))
    }

    /// An agent's link went down: its relayed terminals end for their clients.
    func linkGone(_ link: UInt64) {
        let gone = relays.withLock { r -> [Relay] in
            let ids = r.filter { $0.value.link.id == link }.map(\.key)
            return ids.compactMap { r.removeValue(forKey: $0) }
        }
        for relay in gone { relay.outbox.finish() }
    }

    static func line(_ method: String, _ params: some Encodable) -> Data {
        (try? ControlProtocol.line(Notification(method: method, params: params))) ?? Data()
    }
}
