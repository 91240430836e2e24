import Crypto
import Foundation
import SwiftASN1
import X509

#if canImport(Glibc)
import Glibc
#endif

/// The cluster's certificate authority: the controller and every node agent hold a certificate from it,
/// and each side of an agent link accepts only certificates it issued (mutual TLS). Files in a directory:
/// `ca.crt`, `ca.key` (0600), and per name `NAME.crt`, `NAME.key` (0600).
public enum ClusterCA {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }

    /// What a certificate is for.
    public enum Role: String, Sendable {
        /// A node agent: its certificate names its node.
        case node
        /// The controller (allotd): its certificate names the hosts agents connect to.
        case controller
    }

    /// Makes a new CA in `dir` (refuses to overwrite one).
    /// - Returns: the certificate's path.
    @discardableResult
    public static func initialize(dir: String, name: String = "allot cluster CA", years: Int = 10) throws -> String {
        let crt = dir + "/ca.crt"
        let keyPath = dir + "/ca.key"
        if FileManager.default.fileExists(atPath: crt) || FileManager.default.fileExists(atPath: keyPath) {
            throw Failure("\(dir) already holds a CA (ca.crt or ca.key); refusing to overwrite it")
        }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let key = P256.Signing.PrivateKey()
        let privateKey = Certificate.PrivateKey(key)
        let subject = try DistinguishedName {
            OrganizationName("allot")
            CommonName(name)
        }
        let now = Date()
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            Critical(KeyUsage(keyCertSign: true, cRLSign: true))
        }
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: privateKey.publicKey,
            notValidBefore: now.addingTimeInterval(-300),
            notValidAfter: now.addingTimeInterval(Double(years) * 365 * 86400),
            issuer: subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions,
            issuerPrivateKey: privateKey
        )
        try write(key.pemRepresentation, to: keyPath, mode: 0o600)
        try write(try certificate.serializeAsPEM().pemString, to: crt, mode: 0o644)
        return crt
    }

    /// Issues a certificate for a node agent or the controller, signed by the CA in `dir`.
    /// - Parameters:
    ///   - name: the node's name (agents), or the controller's name.
    ///   - hosts: more names and IP addresses the certificate is good for (the controller's addresses).
    /// - Returns: the certificate's and the key's paths.
    public static func issue(
        dir: String,
        name: String,
        role: Role,
        hosts: [String] = [],
        days: Int = 825
    ) throws -> (certificate: String, key: String) {
        guard !name.isEmpty, !name.contains("/") else { throw Failure("\"\(name)\" cannot name a certificate") }
        let (caCert, caKey) = try loadCA(dir: dir)
        let key = P256.Signing.PrivateKey()
        let privateKey = Certificate.PrivateKey(key)
        let subject = try DistinguishedName {
            OrganizationName("allot")
            OrganizationalUnitName(role.rawValue)
            CommonName(name)
        }
        var names: [GeneralName] = [.dnsName(name)]
        for h in hosts where h != name {
            if let ip = ipBytes(h) {
                names.append(.ipAddress(ASN1OctetString(contentBytes: ip[...])))
            } else {
                names.append(.dnsName(h))
            }
        }
        let now = Date()
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
            try ExtendedKeyUsage([.serverAuth, .clientAuth])
            SubjectAlternativeNames(names)
        }
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: privateKey.publicKey,
            notValidBefore: now.addingTimeInterval(-300),
            notValidAfter: now.addingTimeInterval(Double(days) * 86400),
            issuer: caCert.subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions,
            issuerPrivateKey: caKey
        )
        let crtPath = "\(dir)/\(name).crt"
        let keyPath = "\(dir)/\(name).key"
        try write(key.pemRepresentation, to: keyPath, mode: 0o600)
        try write(try certificate.serializeAsPEM().pemString, to: crtPath, mode: 0o644)
        return (crtPath, keyPath)
    }

    /// The name a certificate was issued for (its common name), and its role.
    public static func identity(pem: String) throws -> (name: String, role: Role?) {
        let certificate = try Certificate(pemEncoded: pem)
        return try identity(certificate)
    }

    /// The name and role in a certificate's subject.
    public static func identity(derBytes: [UInt8]) throws -> (name: String, role: Role?) {
        try identity(Certificate(derEncoded: derBytes))
    }

    static func identity(_ certificate: Certificate) throws -> (name: String, role: Role?) {
        var name: String?
        var role: Role?
        for rdn in certificate.subject {
            for attribute in rdn {
                if attribute.type == .RDNAttributeType.commonName { name = String(describing: attribute.value) }
                if attribute.type == .RDNAttributeType.organizationalUnitName {
                    role = Role(rawValue: String(describing: attribute.value))
                }
            }
        }
        guard let name else { throw Failure("the certificate has no common name") }
        return (name, role)
    }

    static func loadCA(dir: String) throws -> (Certificate, Certificate.PrivateKey) {
        let crt = dir + "/ca.crt"
        let keyPath = dir + "/ca.key"
        guard let crtText = try? String(contentsOfFile: crt, encoding: .utf8),
            let keyText = try? String(contentsOfFile: keyPath, encoding: .utf8)
        else { throw Failure("no CA in \(dir) (ca.crt and ca.key); make one with `allotctl ca init --dir \(dir)`") }
        let certificate = try Certificate(pemEncoded: crtText)
        let key = try Certificate.PrivateKey(pemEncoded: keyText)
        return (certificate, key)
    }

    /// Whether a host is an IP address (v4 or v6) rather than a name.
    public static func isIPAddress(_ s: String) -> Bool { ipBytes(s) != nil }

    static func ipBytes(_ s: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, s, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    static func write(_ text: String, to path: String, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw Failure("cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        fchmod(fd, mode)
        let bytes = Array((text.hasSuffix("\n") ? text : text + "\n").utf8)
        guard Glibc.write(fd, bytes, bytes.count) == bytes.count else {
            throw Failure("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}
