import AllotProtocol
import Foundation
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Copies a job's log to a client as `logs.data` notifications, following it while the job runs, then
/// sends `logs.end`. Runs on the connection's writer, so a slow client slows only its own copy.
enum LogCopier {
    static let chunk = 64 << 10

    /// - Returns: false when the client went away.
    static func copy(
        _ stream: LogStream,
        to outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        outbox: Outbox
    ) async -> Bool {
        var offset = stream.offset
        var fd: Int32 = -1
        defer { if fd >= 0 { close(fd) } }
        var carry: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: chunk)
        func send(_ value: some Encodable, method: String) async -> Bool {
            guard let line = try? ControlProtocol.line(Notification(method: method, params: value)) else { return true }
            do {
                try await outbound.write(ByteBuffer(bytes: line))
                return true
            } catch {
                return false
            }
        }
        while true {
            // Read `ended` before reading the file, so that bytes written before the end are not missed.
            let ended =
                outbox.stopping.load(ordering: .relaxed)
                ? (stream.ended ?? LogsEnd(state: "daemon stopping")) : stream.ended
            var n = 0
            if let link = stream.remote {
                let got = await RemoteLogs.shared.read(link, job: stream.job, offset: offset, max: chunk)
                n = min(got.count, chunk)
                buffer.replaceSubrange(0..<n, with: got.prefix(n))
            } else {
                if fd < 0 { fd = open(stream.path, O_RDONLY | O_CLOEXEC) }
                if fd >= 0 {
                    n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, chunk, off_t(offset)) }
                    if n < 0 { n = 0 }
                }
            }
            if n > 0 {
                offset += n
                var bytes = carry + buffer[0..<n]
                // Keep an incomplete UTF-8 character for the next chunk.
                let cut = completeUTF8Prefix(bytes)
                carry = Array(bytes[cut...])
                bytes.removeSubrange(cut...)
                if !bytes.isEmpty {
                    guard
                        await send(
                            LogsData(data: String(decoding: bytes, as: UTF8.self)),
                            method: Notifications.logsData.name
                        )
                    else {
                        return false
                    }
                }
                continue
            }
            if let ended {
                if !carry.isEmpty {
                    guard
                        await send(
                            LogsData(data: String(decoding: carry, as: UTF8.self)),
                            method: Notifications.logsData.name
                        )
                    else {
                        return false
                    }
                }
                return await send(ended, method: Notifications.logsEnd.name)
            }
            try? await Task.sleep(for: .milliseconds(100))
            if Task.isCancelled { return false }
        }
    }

    /// The length of the longest prefix that does not end inside a UTF-8 character.
    static func completeUTF8Prefix(_ bytes: [UInt8]) -> Int {
        var i = bytes.count
        var back = 0
        while i > 0 && back < 4 {
            let b = bytes[i - 1]
            if b & 0xC0 == 0x80 {
                i -= 1
                back += 1
                continue
            }
            if b & 0x80 == 0 { return bytes.count }
            let need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2
            return back + 1 >= need ? bytes.count : i - 1
        }
        return bytes.count
    }
}
