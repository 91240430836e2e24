import AllotConfig
import AllotCore
import AllotProtocol
import Foundation

/// What a webhook receives: the notice's id (the same on every try), the moment, when, and the job.
struct NoticeBody: Encodable {
    var notice: String
    var event: String
    var time: String
    var job: JobObject
}

extension Engine {
    /// The moment of a job's life an event is, for notices: begin, preempt, requeue, end (and fail).
    /// Read after the event is applied (a finish that puts the job back in the queue is a requeue).
    func noticeEvents(_ body: Event.Body) -> (JobID, [JobNotify.Event])? {
        switch body {
        case .jobStarted(let id, _, _, _): return (id, [.begin])
        case .jobPreempted(let id, _, _, _): return (id, [.preempt])
        case .jobRequeued(let id, _): return (id, [.requeue])
        case .jobCancelled(let id, _, _):
            // A waiting job ends here; a running one when its run ends.
            guard let job = state.jobs[id], job.state.isTerminal else { return nil }
            return (id, [.end])
        case .jobFinished(let id, _, _):
            guard let job = state.jobs[id] else { return nil }
            switch job.state {
            case .completed, .cancelled: return (id, [.end])
            case .failed, .timedOut: return (id, [.end, .fail])
            case .pending, .held: return (id, [.requeue])
            case .running, .stopping: return nil
            }
        default: return nil
        }
    }

    /// Queues the notices an event calls for (sent once it is durable): to the job's webhook (else its
    /// tenant's) and mail address, for the moments it asked to be told of.
    func noticesFor(_ body: Event.Body) {
        guard let (id, events) = noticeEvents(body), let job = state.jobs[id] else { return }
        let spec = job.spec
        let url = spec.notify?.url ?? config.tenantNotify[spec.tenant]
        guard url != nil || spec.notify?.mailUser != nil else { return }
        let wanted = spec.notify?.events ?? JobNotify.defaultEvents
        let told = events.filter { wanted.contains($0) }
        guard !told.isEmpty else { return }
        let object = summary(job)
        let time = WireTime.format(Self.now)
        for event in told {
            let id = "\(job.id).\(job.runs).\(event.rawValue)"
            let subject = Self.noticeSubject(job, event: event, reason: object.reason)
            if let u = url.flatMap(WebhookURL.init),
                let data = try? ControlProtocol.encoder().encode(
                    NoticeBody(notice: id, event: event.rawValue, time: time, job: object)
                )
            {
                pendingActions.append(
                    .tell(
                        JobNotice(
                            destination: .webhook(u),
                            id: id,
                            job: job.id,
                            event: event,
                            body: Array(data),
                            subject: subject
                        )
                    )
                )
            }
            if let m = spec.notify?.mailUser {
                var text = subject + "\n\n"
                text += "job \(job.id) (\(spec.name)), user \(spec.user ?? "uid \(spec.uid)"), tenant \(spec.tenant)\n"
                text += "state: \(job.state.rawValue)\(object.reason.map { " (\($0))" } ?? "")\n"
                if let n = object.node { text += "node: \(n)\n" }
                if let s = object.startTime { text += "started: \(s)\n" }
                if let e = object.endTime { text += "ended: \(e)\n" }
                if let r = object.ranSeconds { text += "ran: \(DurationText.format(r))\n" }
                text += "cost: $\(Money.format(object.costUSD))\n"
                pendingActions.append(
                    .tell(
                        JobNotice(
                            destination: .mail(m),
                            id: id,
                            job: job.id,
                            event: event,
                            body: Array(text.utf8),
                            subject: subject
                        )
                    )
                )
            }
        }
    }

    /// `allot job 12 (train): ended, failed (exit code 1)`.
    static func noticeSubject(_ job: Job, event: JobNotify.Event, reason: String?) -> String {
        let what =
            switch event {
            case .begin: "began"
            case .end: "ended, \(job.state.rawValue)"
            case .fail: "failed (\(job.state.rawValue))"
            case .preempt: "preempted"
            case .requeue: "back in the queue"
            }
        return "allot job \(job.id) (\(job.spec.name)): \(what)\(reason.map { " — \($0)" } ?? "")"
    }
}
