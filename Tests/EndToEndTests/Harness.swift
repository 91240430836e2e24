import Foundation
import Testing

/// Runs the project's real binaries.
enum Harness {
    /// The package root, found from this file.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The directory holding the built products: next to the test bundle, or `$ALLOT_BIN_DIR`.
    static var binDir: URL {
        if let dir = ProcessInfo.processInfo.environment["ALLOT_BIN_DIR"] { return URL(fileURLWithPath: dir) }
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.isExecutableFile(atPath: url.appendingPathComponent("allotctl").path) { return url }
        }
        return root.appendingPathComponent(".build/debug")
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs a product with arguments, from the package root, and waits for it.
    static func run(
        _ product: String,
        _ args: [String],
        environment: [String: String] = [:],
        stdin: String? = nil,
        absolute: Bool = false
    ) throws -> Output {
        let p = Process()
        p.executableURL = absolute ? URL(fileURLWithPath: product) : binDir.appendingPathComponent(product)
        p.arguments = args
        p.currentDirectoryURL = root
        var env = ProcessInfo.processInfo.environment
        env["COLUMNS"] = "100"
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let input = Pipe()
        p.standardInput = stdin == nil ? FileHandle.nullDevice : input
        try p.run()
        if let stdin {
            // Feed standard input from another thread: the child may answer before reading it all.
            let data = Data(stdin.utf8)
            let writer = input.fileHandleForWriting
            Thread.detachNewThread {
                writer.write(data)
                try? writer.close()
            }
        }
        // Read both pipes before waiting so a chatty child cannot block on a full pipe.
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Output(
            status: p.terminationStatus,
            stdout: String(decoding: o, as: UTF8.self),
            stderr: String(decoding: e, as: UTF8.self)
        )
    }

    /// A fresh temporary directory, removed after `body`.
    static func withTempDir<T>(_ body: (URL) throws -> T) throws -> T {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        return try body(dir)
    }
}
