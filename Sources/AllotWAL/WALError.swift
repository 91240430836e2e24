/// Why the log refused: a stable code and a sentence saying what failed, on what, and what to do next.
public struct WALError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// A system call failed (disk full, I/O error, permissions).
        case io
        /// The log is damaged before its tail, or a record does not apply.
        case corrupt
        /// A segment or the start of the log is missing.
        case missing
        /// Another process holds the state directory.
        case locked
        /// The log refuses appends after a failed sync, until it is reopened.
        case failed
        /// The log was closed.
        case closed
    }

    public var code: Code
    public var message: String
    /// The file the error is about, when there is one.
    public var file: String?
    /// Byte offset in `file`.
    public var offset: Int?
    /// The record's LSN.
    public var lsn: UInt64?

    public init(_ code: Code, _ message: String, file: String? = nil, offset: Int? = nil, lsn: UInt64? = nil) {
        self.code = code
        self.message = message
        self.file = file
        self.offset = offset
        self.lsn = lsn
    }

    init(_ e: SystemError) { self.init(.io, e.description, file: e.path) }

    public var description: String { message }
}
