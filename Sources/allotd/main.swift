import AllotDaemon
import ArgumentParser
import Foundation

/// In an async function, `main()` is argument-parser's async entry point (top-level code picks the sync one).
func runCommand() async {
    await Allotd.main()
}
await runCommand()
