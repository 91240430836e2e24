import Foundation
import Logging

/// A swift-log handler that writes structured entries to the journal, for allotd under systemd:
/// `MESSAGE=`, `PRIORITY=`, `CODE_FILE=`, `CODE_LINE=`, `CODE_FUNC=`, `SYSLOG_IDENTIFIER=`, and each
/// metadata key as a field of its own — `job.id` → `ALLOT_JOB_ID=`, `node` → `ALLOT_NODE=` — so that
/// `journalctl -u allotd ALLOT_JOB_ID=42` finds a job's story.
public struct JournalLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String
    let identifier: String

    public init(label: String, identifier: String = "allotd") {
        self.label = label
        self.identifier = identifier
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// A metadata key as a journal field name: upper case, `[A-Z0-9_]`, prefixed `ALLOT_`.
    public static func fieldName(_ key: String) -> String {
        var out = "ALLOT_"
        for c in key.unicodeScalars {
            switch c {
            case "a"..."z": out.unicodeScalars.append(Unicode.Scalar(c.value - 32)!)
            case "A"..."Z", "0"..."9": out.unicodeScalars.append(c)
            default: out += "_"
            }
        }
        return out
    }

    /// syslog priorities.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    public func log(event: LogEvent) {
        let merged = event.metadata.map { self.metadata.merging($0) { _, new in new } } ?? self.metadata
        var text = event.message.description
        // The message line carries the metadata too, as `journalctl` shows only MESSAGE by default.
        if !merged.isEmpty {
            text += " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        }
        var fields = [
            "MESSAGE=\(text)",
            "PRIORITY=\(Self.priority(event.level))",
            "SYSLOG_IDENTIFIER=\(identifier)",
            "CODE_FILE=\(event.file)",
            "CODE_LINE=\(event.line)",
            "CODE_FUNC=\(event.function)",
            "ALLOT_LOGGER=\(label)",
        ]
        for (k, v) in merged { fields.append("\(Self.fieldName(k))=\(v)") }
        if !Systemd.journal(fields) {
            FileHandle.standardError.write(Data("<\(Self.priority(event.level))>\(text)\n".utf8))
        }
    }
}
