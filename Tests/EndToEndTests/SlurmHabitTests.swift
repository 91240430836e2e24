import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a Slurm user reaches for, through the real allotd and allotctl: batch scripts with `#ALLOT` and
/// `#SBATCH` lines, and dependencies.
@Suite(.serialized) struct SlurmHabitTests {
    /// A script's `#SBATCH` and `#ALLOT` lines are its options (command-line options win); the job runs the
    /// copy taken at submit, with its arguments; what is not taken over is named in a warning.
    @Test func aBatchScriptRunsWithTheOptionsOfItsLines() throws {
        let d = try DaemonFixture()
        let script = d.dir.appendingPathComponent("train.sh")
        try """
        #!/bin/sh
        # Slurm's lines, then allot's.
        #SBATCH --job-name=sweep-%j
        #SBATCH -t 5 --gres=gpu:a100:2
        #SBATCH --mem=1G -c 2   # two CPUs
        #SBATCH --qos=high
        #SBATCH -p scavenger
        #ALLOT --env MODE=fast
        echo "args=$# $1|$2 gpus=$CUDA_VISIBLE_DEVICES mode=$MODE"
        #SBATCH --gres=gpu:4
        exit 0
        """.write(to: script, atomically: true, encoding: .utf8)
        let r = d.ctl(["submit", script.path, "one", "two words"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("train.sh:6: #SBATCH --qos=high"), "\(r.stderr)")
        #expect(!r.stderr.contains("-p"), "a partition named like a class is that class: \(r.stderr)")
        let id = try #require(Int(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        // Editing the script after submit changes nothing queued.
        try "#!/bin/sh\necho edited\n".write(to: script, atomically: true, encoding: .utf8)
        try d.wait(id, for: "completed")
        let job = try #require(d.job(id))
        #expect(job["gpus"] as? Int == 2, "a line after the first command is not read")
        #expect(job["gpu_model"] as? String == "A100", "gres types are matched whatever their case")
        #expect(job["walltime_s"] as? Double == 300, "-t 5 is five minutes, as in Slurm")
        #expect(job["cpus"] as? Double == 2 && job["memory_mib"] as? Int == 1024)
        #expect(job["name"] as? String == "sweep-%j")
        #expect(job["class"] as? String == "scavenger")
        // A partition that is neither a class nor a tenant is ignored, with a warning.
        let gpuPartition = d.ctl(["submit", "-p", "gpu", "--hold", "--", "true"])
        #expect(gpuPartition.status == 0 && gpuPartition.stderr.contains("partition \"gpu\" is neither"))
        _ = d.ctl(["cancel", gpuPartition.stdout.trimmingCharacters(in: .whitespacesAndNewlines)])
        let log = d.ctl(["logs", String(id)]).stdout
        #expect(log.contains("args=2 one|two words gpus=0,1 mode=fast"), "\(log)")
        #expect(d.ctl(["show", String(id)]).stdout.contains("batch script train.sh one 'two words'"))
        // Options given on the command line win over the script's; output names take %j.
        try """
        #!/bin/sh
        #ALLOT --gpus 2 --name from-script
        #SBATCH -o out-%j.txt
        echo "gpus=$CUDA_VISIBLE_DEVICES"
        """.write(to: script, atomically: true, encoding: .utf8)
        let second = try d.submit(["--gpus", "1", "--workdir", d.dir.path, script.path])
        try d.wait(second, for: "completed")
        #expect(d.job(second)?["gpus"] as? Int == 1 && d.job(second)?["name"] as? String == "from-script")
        let out = try String(contentsOfFile: d.dir.appendingPathComponent("out-\(second).txt").path, encoding: .utf8)
        #expect(out.hasPrefix("gpus="), "\(out)")
        // Not a script is refused with the reason; nothing is submitted.
        try "echo hi\n".write(to: script, atomically: true, encoding: .utf8)
        let notScript = d.ctl(["submit", script.path])
        #expect(notScript.status != 0 && notScript.stderr.contains("does not start with #!"), "\(notScript.stderr)")
        #expect(d.ctl(["ls", "--state", "all"]).stdout.split(separator: "\n").count == 4)
    }

    /// An array of 1,000 tasks with %10: one submit, never more than 10 running, every task sees its
    /// index; `ls` folds the waiting ones; `cancel ID_N` takes one task, `cancel ID` the rest.
    @Test func anArrayRunsEveryTaskWithItsIndexAtMostTenAtOnce() throws {
        let d = try DaemonFixture()
        let marks = d.dir.appendingPathComponent("marks").path
        let script = d.dir.appendingPathComponent("sweep.sh")
        try """
        #!/bin/sh
        #SBATCH --array=0-999%10
        #SBATCH -o /dev/null
        echo "start $ALLOT_ARRAY_TASK_ID $SLURM_ARRAY_JOB_ID" >> \(marks)
        sleep 0.05
        echo "end $ALLOT_ARRAY_TASK_ID" >> \(marks)
        """.write(to: script, atomically: true, encoding: .utf8)
        let array = try d.submit(["--gpus", "0", script.path])
        let ls = d.ctl(["ls"]).stdout
        #expect(ls.contains("\(array)_["), "\(ls)")
        #expect(ls.contains("array limit (10 at once)"), "\(ls)")
        let last = array + 999
        try d.wait(last, for: "completed", timeout: 240)
        let lines = ((try? String(contentsOfFile: marks, encoding: .utf8)) ?? "").split(separator: "\n")
        var running = 0
        var most = 0
        var seen = Set<Int>()
        for line in lines {
            let f = line.split(separator: " ")
            if f[0] == "start" {
                running += 1
                seen.insert(Int(f[1]) ?? -1)
                #expect(f.count == 3 && f[2] == "\(array)", "\(line)")
            } else {
                running -= 1
            }
            most = max(most, running)
        }
        #expect(seen == Set(0..<1000), "\(seen.count) tasks ran")
        #expect(most <= 10 && most >= 2, "\(most) ran at once")
        // A second array: one task cancelled by ID_N, then the rest by the array's id.
        let second = try d.submit(["--gpus", "0", "--array", "0-4%1", "--", "sleep", "30"])
        #expect(d.ctl(["cancel", "\(second)_3"]).stdout == "cancelled \(second + 3)\n")
        let all = d.ctl(["cancel", "\(second)"])
        #expect(all.status == 0 && all.stdout.split(separator: "\n").count == 4, "\(all.stdout)")
        for k in 0..<5 { try d.wait(second + k, for: "cancelled") }
        #expect(d.job(second + 2)?["array_task_id"] as? Int == 2)
        // show, why and logs take a task as ID_N too.
        #expect(d.ctl(["show", "\(second)_2"]).stdout.contains("id           \(second + 2)\n"))
        #expect(d.ctl(["why", "\(second)_4"]).stdout.hasPrefix("job \(second + 4) is cancelled"))
        let log = d.ctl(["logs", "\(array)_999"])
        #expect(log.status == 0, "\(log.stderr)")
        #expect(d.ctl(["cancel", "\(second)_9"]).stderr.contains("no task 9 in job array \(second)"))
    }

    /// A chain runs in order; a failed parent cancels its afterok children with the reason, runs its
    /// afternotok child, and `why` says what a waiting job waits for. A singleton waits for the earlier job
    /// of its name. Dependencies survive a SIGKILL of the daemon.
    @Test func aDependencyChainRunsInOrderAndAFailureCancelsItsChildren() throws {
        let d = try DaemonFixture()
        let marks = d.dir.appendingPathComponent("marks").path
        let first = try d.submit(["--name", "first", "--", "sh", "-c", "sleep 1; echo first >> \(marks)"])
        let second = try d.submit([
            "--dependency", "afterok:\(first)", "--", "sh", "-c", "echo second >> \(marks); exit 4",
        ])
        let third = try d.submit(["-d", "afterok:\(second)", "--", "sh", "-c", "echo third >> \(marks)"])
        let rescue = try d.submit(["-d", "afternotok:\(second)", "--", "sh", "-c", "echo rescue >> \(marks)"])
        let why = d.ctl(["why", String(second)]).stdout
        #expect(why.contains("waiting for its dependency afterok:\(first): job \(first) is"), "\(why)")
        #expect(d.ctl(["ls"]).stdout.contains("dependency"))
        // allotd is killed while they wait: the dependencies are in its log.
        #expect(d.stop(signal: SIGKILL) == 128 + SIGKILL)
        try d.start()
        try d.wait(rescue, for: "completed", timeout: 30)
        try d.wait(third, for: "cancelled")
        #expect(d.state(second) == "failed")
        let reason = d.job(third)?["reason"] as? String ?? ""
        #expect(
            reason.contains("its dependency can never be met: afterok:\(second): job \(second) failed (exit code 4)")
        )
        #expect(d.job(third)?["dependency"] as? String == "afterok:\(second)")
        let order = (try? String(contentsOfFile: marks, encoding: .utf8)) ?? ""
        #expect(order == "first\nsecond\nrescue\n", "\(order)")
        // A dependency that can never be met, or on no job, is refused at submit.
        let never = d.ctl(["submit", "-d", "afterok:\(second)", "--", "true"])
        #expect(never.status != 0 && never.stderr.contains("can never be met"), "\(never.stderr)")
        let none = d.ctl(["submit", "-d", "afterany:999", "--", "true"])
        #expect(none.status != 0 && none.stderr.contains("no job 999"), "\(none.stderr)")
        // singleton: the second job named "one" waits until the first has ended.
        let a = try d.submit(["--name", "one", "--", "sleep", "2"])
        let b = try d.submit(["--name", "one", "-d", "singleton", "--", "true"])
        try d.wait(a, for: "running")
        #expect(d.state(b) == "pending")
        #expect(d.ctl(["why", String(b)]).stdout.contains("singleton: job \(a)"))
        try d.wait(b, for: "completed")
        let aEnd = d.job(a)?["end_time"] as? String ?? ""
        let bStart = d.job(b)?["start_time"] as? String ?? ""
        #expect(!aEnd.isEmpty && bStart >= aEnd, "\(aEnd) \(bStart)")
    }

    /// sacct's habits: `history` by time window with wait, run time, exit code, GPU-hours and cost; `ls`
    /// filtered by name, node and time; Slurm's short options and its -t minutes.
    @Test func historyAndFiltersAnswerByTimeNameAndNode() throws {
        let d = try DaemonFixture()
        let short = try d.submit(["-G", "2", "-t", "30", "-J", "quick", "--gpu-model", "A100", "--", "true"])
        let other = try d.submit(["--name", "slow-eval", "--gpu-model", "L4", "--", "sh", "-c", "exit 2"])
        try d.wait(short, for: "completed")
        try d.wait(other, for: "failed")
        let job = try #require(d.job(short))
        #expect(job["gpus"] as? Int == 2 && job["walltime_s"] as? Double == 1800 && job["name"] as? String == "quick")
        #expect((job["gpu_hours"] as? Double ?? 0) > 0 && job["ran_s"] != nil)
        // History of today: both, with their exit codes; csv keeps full precision.
        let table = d.ctl(["history"]).stdout
        #expect(table.contains("quick") && table.contains("slow-eval"), "\(table)")
        let csv = d.ctl(["history", "--format", "csv", "--name", "slow-*"]).stdout.split(separator: "\n")
        #expect(csv.count == 2 && csv[0].hasPrefix("id,name,user"), "\(csv)")
        #expect(csv.last?.contains(",failed,") == true && csv.last?.contains(",2,") == true, "\(csv)")
        // A window that ends before they were submitted has none; one an hour back has both.
        let before = d.ctl(["history", "--since", "2020-01-01", "--until", "2020-01-02", "--format", "json"]).stdout
        let none = try JSONSerialization.jsonObject(with: Data(before.utf8)) as? [Any]
        #expect(none?.isEmpty == true, "\(before)")
        let recent = d.ctl(["ls", "--since", "-1h", "--json"]).stdout
        #expect(recent.contains("\"quick\"") && recent.contains("\"slow-eval\""), "\(recent)")
        // By node: the L4 job ran on l1.
        let onL1 = d.ctl(["ls", "--all", "--node", "l1"]).stdout
        #expect(onL1.contains("slow-eval") && !onL1.contains("quick"), "\(onL1)")
        let bad = d.ctl(["ls", "--since", "last tuesday"])
        #expect(bad.status != 0 && bad.stderr.contains("is not a time"), "\(bad.stderr)")
    }

    /// Ended jobs older than `job_retention` leave allotd's state for its archive: `ls` no longer lists
    /// them, `show` and `history` still answer from the archive, `cost` still counts them — also after a
    /// SIGKILL and restart.
    @Test func endedJobsAreArchivedAfterTheirRetentionAndStayAnswerable() throws {
        let d = try DaemonFixture(daemon: "job_retention = \"2s\"")
        let ok = try d.submit(["--name", "old-ok", "--", "sleep", "0.2"])
        let bad = try d.submit(["--name", "old-bad", "--", "sh", "-c", "sleep 0.2; exit 4"])
        let array = try d.submit(["--array", "0-2", "--name", "old-array", "--", "true"])
        try d.wait(ok, for: "completed")
        try d.wait(bad, for: "failed")
        try d.wait(array + 2, for: "completed")
        let costBefore = d.ctl(["cost", "--json"]).stdout
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, d.ctl(["ls", "--state", "all"]).stdout.contains("old-") { usleep(200_000) }
        #expect(!d.ctl(["ls", "--state", "all"]).stdout.contains("old-"), "archived jobs leave the state")
        #expect(d.daemonLog.contains("Jobs archived"))
        func check() throws {
            let shown = try #require(d.job(bad), "show answers from the archive")
            #expect(shown["state"] as? String == "failed" && shown["exit_code"] as? Int == 4)
            #expect(d.job(array + 1)?["array_task_id"] as? Int == 1)
            let history = d.ctl(["history", "--since", "-1h", "--format", "csv"]).stdout
            #expect(
                history.contains("old-ok") && history.contains("old-bad") && history.contains("old-array"),
                "\(history)"
            )
            #expect(d.ctl(["history", "--since", "-1h", "--name", "old-bad"]).stdout.split(separator: "\n").count == 2)
            func total(_ json: String) -> Double {
                let rows = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]]
                return (rows ?? []).reduce(0) { $0 + ($1["cost_usd"] as? Double ?? 0) }
            }
            let after = total(d.ctl(["cost", "--json"]).stdout)
            #expect(after > 0 && abs(after - total(costBefore)) < 1e-6, "\(costBefore) vs \(after)")
        }
        try check()
        let files = try FileManager.default.contentsOfDirectory(atPath: d.stateDir + "/archive")
        #expect(files.count == 1 && files[0].hasPrefix("jobs-"), "\(files)")
        // After a crash and a restart, the same.
        d.stop(signal: SIGKILL)
        try d.start()
        #expect(!d.ctl(["ls", "--state", "all"]).stdout.contains("old-"))
        try check()
        // New jobs get new ids.
        #expect(try d.submit(["--", "true"]) == array + 3)
    }

    /// scontrol's habits: `update` changes a waiting job (and a running one's walltime), `requeue` puts an
    /// ended job back in the queue, and stops a running one first; each change is logged with who made it.
    @Test func updateChangesAWaitingJobAndRequeueRunsAnEndedOneAgain() throws {
        let d = try DaemonFixture()
        let held = try d.submit(["--hold", "--name", "first", "--", "sh", "-c", "echo gpus=$CUDA_VISIBLE_DEVICES"])
        let u = d.ctl(["update", String(held), "-G", "3", "-t", "10", "-J", "second", "--gpu-model", "a100"])
        #expect(u.status == 0, "\(u.stderr)")
        var job = try #require(d.job(held))
        #expect(job["gpus"] as? Int == 3 && job["walltime_s"] as? Double == 600 && job["name"] as? String == "second")
        #expect(d.daemonLog.contains("Job updated"))
        #expect(d.ctl(["release", String(held)]).status == 0)
        try d.wait(held, for: "completed")
        #expect(d.ctl(["logs", String(held)]).stdout.contains("gpus=0,1,2"))
        // A running job: its walltime, shortened, stops it; anything else is refused, saying why.
        let running = try d.submit(["--walltime", "1h", "--", "sleep", "60"])
        try d.wait(running, for: "running")
        let gpus = d.ctl(["update", String(running), "--gpus", "2"])
        #expect(gpus.status != 0 && gpus.stderr.contains("only a waiting job's gpus may change"), "\(gpus.stderr)")
        #expect(d.ctl(["update", String(running), "--walltime", "1s"]).status == 0)
        try d.wait(running, for: "timed_out")
        // Requeued, it runs again; its first run stays in its history.
        let r = d.ctl(["requeue", String(running)])
        #expect(r.status == 0 && r.stdout == "requeued \(running)\n", "\(r.stderr)")
        try d.wait(running, for: "running")
        job = try #require(d.job(running))
        let runs = job["earlier_runs"] as? [[String: Any]] ?? []
        #expect(runs.count == 1 && (runs.first?["ended"] as? String ?? "").hasPrefix("timed out"), "\(runs)")
        // A running job is stopped (its grace, SIGTERM first) and goes back to the queue, then runs again.
        let again = d.ctl(["requeue", String(running)])
        #expect(again.status == 0, "\(again.stderr)")
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, (d.job(running)?["earlier_runs"] as? [Any])?.count ?? 0 < 2 { usleep(50_000) }
        try d.wait(running, for: "running")
        let history = d.job(running)?["earlier_runs"] as? [[String: Any]] ?? []
        #expect(history.count == 2 && (history.last?["ended"] as? String ?? "").contains("requeued by"), "\(history)")
        let pending = try d.submit(["--hold", "--", "true"])
        let refused = d.ctl(["requeue", String(pending)])
        #expect(refused.status != 0 && refused.stderr.contains("already waiting"), "\(refused.stderr)")
    }
}
