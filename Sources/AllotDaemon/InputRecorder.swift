import AllotConfig
import AllotCore
import AllotProtocol
import AllotWAL
import CoreMetrics
import Foundation
import Logging
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Records the controller's inputs with their clock readings, one JSON line each (`{"at":…,"input":…}`).
final class InputRecorder {
    private let fd: Int32
    private let encoder = JSONEncoder()

    init?(path: String, logger: Logger) {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            logger.error(
                "Cannot record the controller's inputs",
                metadata: ["path": "\(path)", "error": "\(String(cString: strerror(errno)))"]
            )
            return nil
        }
        encoder.outputFormatting = .sortedKeys
    }

    deinit { close(fd) }

    struct Line: Codable {
        var at: ClockReading
        var input: Controller.Input
    }

    func record(_ input: Controller.Input, at reading: ClockReading) {
        guard var data = try? encoder.encode(Line(at: reading, input: input)) else { return }
        data.append(10)
        data.withUnsafeBytes { _ = write(fd, $0.baseAddress, $0.count) }
    }
}
