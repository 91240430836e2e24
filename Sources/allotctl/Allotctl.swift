import ArgumentParser
import Foundation

@main
struct Allotctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allotctl",
        abstract: "Control allot, the GPU pool scheduler.",
        discussion: """
            allotctl talks to allotd over its Unix socket (--socket, or $ALLOT_SOCKET, default \
            /run/allot/allotd.sock), and runs the scheduler offline on job traces (simulate). Exit codes: 0 \
            success, 1 refused or failed, 2 usage error, 3 not found, 4 permission denied, 69 allotd unreachable.
            """,
        version: "0.1.0",
        subcommands: [
            Submit.self, List.self, Show.self, Why.self, Cancel.self, Hold.self, Release.self, Logs.self, Wait.self, Watch.self,
            Nodes.self, Drain.self, Resume.self, Status.self, Cost.self, Reload.self, Simulate.self, CA.self,
        ]
    )

    /// argument-parser exits 64 on usage errors; allotctl's documented code is 2.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var c = command as? any AsyncParsableCommand {
                try await c.run()
            } else {
                try command.run()
            }
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
