/// Who is told of a job's moments, as Slurm's `--mail-user`/`--mail-type` and a webhook: `url` gets a JSON
/// POST (retried until it answers 2xx), `mailUser` a mail through the local sendmail, for each event in
/// `events`.
public struct JobNotify: Hashable, Sendable, Codable {
    /// A moment in a job's life that may be told.
    public enum Event: String, Hashable, Sendable, CaseIterable, Codable {
        /// A run started.
        case begin
        /// The job ended, however (completed, failed, cancelled, timed out).
        case end
        /// The job ended without completing (failed, timed out, or its run was lost).
        case fail
        /// A run was stopped to make way for another job, or its GPUs reclaimed.
        case preempt
        /// The job went back to the queue (preempted, node lost, requeued).
        case requeue
    }

    /// An `http://` URL to POST to; nil for none.
    public var url: String?
    /// Whom to mail; nil for nobody.
    public var mailUser: String?
    public var events: Set<Event>

    /// What a webhook or mail is told of when the job says nothing: begin, end, fail and preempt.
    public static let defaultEvents: Set<Event> = [.begin, .end, .fail, .preempt]

    public init(url: String? = nil, mailUser: String? = nil, events: Set<Event> = defaultEvents) {
        self.url = url
        self.mailUser = mailUser
        self.events = events
    }

    /// Reads Slurm's `--mail-type` list: `BEGIN,END,FAIL,REQUEUE,ALL,NONE` (any case; `INVALID_DEPEND`,
    /// `TIME_LIMIT` and the like are refused by name); `preempt` is allot's own.
    public static func parseEvents(_ text: String) -> Result<Set<Event>, RequestTextError> {
        var out: Set<Event> = []
        for raw in text.split(separator: ",") {
            let word = blanksTrimmed(raw).lowercased()
            switch word {
            case "all": out.formUnion(Event.allCases)
            case "none": out = []
            case "": continue
            default:
                guard let e = Event(rawValue: word) else {
                    return .failure(
                        RequestTextError(
                            message:
                                "\"\(word)\" is not an event to tell of; expected \(Event.allCases.map(\.rawValue).joined(separator: ", ")), all or none"
                        )
                    )
                }
                out.insert(e)
            }
        }
        return .success(out)
    }

    /// Problems with the addresses: an URL allot can post to, a mail address without spaces.
    public var problems: [String] {
        var out: [String] = []
        if let url, WebhookURL(url) == nil {
            out.append("notify: \"\(url)\" is not an http:// URL (http://HOST[:PORT]/PATH)")
        }
        if let m = mailUser, m.isEmpty || m.count > 254 || m.contains(where: { $0.isWhitespace || $0 == "," }) {
            out.append("mail_user: \"\(m)\" is not one mail address")
        }
        return out
    }

    /// Text of the events, in a fixed order.
    public var eventText: String {
        Event.allCases.filter { events.contains($0) }.map(\.rawValue).joined(separator: ",")
    }
}

/// An `http://HOST[:PORT]/PATH` URL, taken apart (webhooks are posted in plain HTTP: a receiver on the
/// site's network, or a local relay for anything further).
public struct WebhookURL: Hashable, Sendable {
    public var host: String
    public var port: Int
    public var path: String

    public init?(_ text: String) {
        guard text.lowercased().hasPrefix("http://") else { return nil }
        let rest = text.dropFirst(7)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        path = slash == rest.endIndex ? "/" : String(rest[slash...])
        guard !authority.isEmpty, !authority.contains("@"), !path.contains(where: { $0.isWhitespace }) else {
            return nil
        }
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.isEmpty {
                port = 80
            } else {
                guard after.hasPrefix(":"), let p = Int(after.dropFirst()), (1...65535).contains(p) else { return nil }
                port = p
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else { return nil }
            port = p
        } else {
            host = String(authority)
            port = 80
        }
        if host.isEmpty || host.contains(where: { $0.isWhitespace }) { return nil }
    }
}

/// A run attached to its owner's terminal (`allotctl run`, `allotctl alloc`): its input and output go through
/// a socket its supervisor listens on, not to the job's log.
public struct Interactive: Hashable, Sendable, Codable {
    /// Whether the job gets a pseudo-terminal (the client's input is a terminal), else pipes.
    public var pty: Bool
    /// The terminal's size at submit.
    public var rows: Int
    public var cols: Int

    public init(pty: Bool, rows: Int = 24, cols: Int = 80) {
        self.pty = pty
        self.rows = rows
        self.cols = cols
    }
}
