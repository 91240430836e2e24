import AllotPKI
import ArgumentParser
import Foundation

/// `allotctl ca`: the cluster's certificate authority, for the TLS links between allotd and node agents.
struct CA: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "Make the cluster CA and issue certificates for node agents and the controller.",
        discussion: """
            Every link between allotd (the controller) and a node agent is mutual TLS: each side accepts only \
            certificates from the cluster CA, and an agent's certificate names its node. Keep ca.key offline or \
            root-only; copy ca.crt and a node's NAME.crt and NAME.key to that node. See docs/operations.md.
            """,
        subcommands: [CAInit.self, CAIssue.self]
    )
}

struct CAInit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Make a new CA (ca.crt, ca.key) in a directory."
    )

    @Option(name: .long, help: ArgumentHelp("Where the CA's files go.", valueName: "DIR"))
    var dir: String = "/etc/allot/pki"

    @Option(name: .long, help: ArgumentHelp("The CA's name.", valueName: "NAME"))
    var name: String = "allot cluster CA"

    func run() throws {
        do {
            let path = try ClusterCA.initialize(dir: dir, name: name)
            out("\(path)\n")
        } catch {
            throw fail("ca init: \(error)", code: 1)
        }
    }
}

struct CAIssue: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "issue",
        abstract: "Issue a certificate for a node agent (--node) or the controller (--controller)."
    )

    @Option(name: .long, help: ArgumentHelp("The CA's directory.", valueName: "DIR"))
    var dir: String = "/etc/allot/pki"

    @Option(name: .long, help: ArgumentHelp("A node's name: the certificate its agent presents.", valueName: "NAME"))
    var node: String?

    @Option(name: .long, help: ArgumentHelp("The controller's name (its host name).", valueName: "NAME"))
    var controller: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Another host name or IP address the certificate is good for (repeatable).",
            valueName: "HOST"
        )
    )
    var host: [String] = []

    func validate() throws {
        guard (node == nil) != (controller == nil) else {
            throw ValidationError("give exactly one of --node NAME and --controller NAME")
        }
    }

    func run() throws {
        do {
            let (crt, key) = try ClusterCA.issue(
                dir: dir,
                name: node ?? controller!,
                role: node != nil ? .node : .controller,
                hosts: host
            )
            out("\(crt)\n\(key)\n")
        } catch {
            throw fail("ca issue: \(error)", code: 1)
        }
    }
}
