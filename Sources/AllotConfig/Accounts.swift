/// Who may charge which tenant, as Slurm's associations say which users may use which accounts: the
/// `users`/`groups` of each `[[tenant]]`, and the `[accounts]` section (docs/configuration.md, "Accounts").
///
/// A user may use: a tenant whose `users` name them (or `"*"`) or whose `groups` hold one of their groups;
/// the default tenant (`[accounts] default_tenant`), open to all; and their own tenant, named after them,
/// unless a `[[tenant]]` of that name says who may use it. Admins may use any tenant.
public struct Accounts: Hashable, Sendable {
    /// Who may use a declared tenant.
    public struct Access: Hashable, Sendable {
        public var users: Set<String> = []
        public var groups: Set<String> = []

        public init(users: Set<String> = [], groups: Set<String> = []) {
            self.users = users
            self.groups = groups
        }

        /// Whether the lists say anything (a tenant without lists is for admins and its namesake only).
        var isEmpty: Bool { users.isEmpty && groups.isEmpty }
    }

    /// The tenant open to everyone, and the tenant of a submit that names none (for users without their
    /// own default).
    public var defaultTenant: String?
    /// Each user's default tenant.
    public var userDefaults: [String: String] = [:]
    /// Who may use each declared tenant, by tenant name.
    public var access: [String: Access] = [:]

    public init() {}

    /// The tenant a submit that names none goes to.
    public func defaultTenant(for user: String?) -> String {
        if let user, let t = userDefaults[user] { return t }
        return defaultTenant ?? user ?? "default"
    }

    /// Whether `user` (a member of `groups`) may charge `tenant`.
    /// - Returns: nil when allowed; otherwise the rule that refuses it, as a sentence.
    public func refusal(user: String?, groups: [String], admin: Bool, tenant: String) -> String? {
        if admin || tenant == defaultTenant { return nil }
        if let a = access[tenant], !a.isEmpty {
            if let user, a.users.contains(user) || a.users.contains("*") { return nil }
            if groups.contains(where: { a.groups.contains($0) }) { return nil }
        } else if tenant == user {
            return nil
        }
        let who = user ?? "this user"
        var rule: String
        if let a = access[tenant], !a.isEmpty {
            var lists: [String] = []
            if !a.users.isEmpty { lists.append("users " + a.users.sorted().joined(separator: ", ")) }
            if !a.groups.isEmpty { lists.append("groups " + a.groups.sorted().joined(separator: ", ")) }
            rule = "tenant \(tenant) may be used by \(lists.joined(separator: " and ")) (its [[tenant]] users/groups)"
        } else if access[tenant] != nil {
            rule = "tenant \(tenant) names no users or groups, so only admins may use it"
        } else {
            rule = "tenant \(tenant) is not \(who)'s own tenant, nor one the configuration lets \(who) use"
        }
        let usable = usableTenants(user: user, groups: groups)
        return "\(who) may not charge tenant \(tenant): \(rule); \(who) may use "
            + (usable.isEmpty ? "no tenant" : usable.joined(separator: ", "))
    }

    /// The tenants a (non-admin) user may use, sorted.
    public func usableTenants(user: String?, groups: [String]) -> [String] {
        var out = Set<String>()
        if let d = defaultTenant { out.insert(d) }
        if let user, access[user]?.isEmpty ?? true { out.insert(user) }
        for (name, a) in access where !a.isEmpty {
            if let user, a.users.contains(user) || a.users.contains("*") { out.insert(name) }
            if groups.contains(where: { a.groups.contains($0) }) { out.insert(name) }
        }
        return out.sorted()
    }
}
