/**
 * Python's smtplib as a real SMTP submission client: one session (EHLO, STARTTLS when asked,
 * AUTH, MAIL, each RCPT, DATA, QUIT) whose every reply is reported as the client saw it.
 * The message goes as bytes; smtplib dot-stuffs it and leaves CRLF line ends as they are.
 */
import { execFile } from 'node:child_process';

export interface SmtpJob {
  port: number;
  host?: string;
  starttls?: boolean;
  /** The CA that signs the server's certificate, for STARTTLS. */
  caFile?: string;
  user?: string;
  password?: string;
  /** AUTH XOAUTH2 with this token instead of a password. */
  accessToken?: string;
  from: string;
  to: string[];
  message: Buffer;
  /** The local address to connect from (a loopback one other than 127.0.0.1, say). */
  sourceAddress?: string;
  /** Implicit TLS (SMTP_SSL) instead of a plain connection. */
  implicitTls?: boolean;
}

export interface SmtpReport {
  /** Each step's reply code and text, as smtplib got them: ehlo, auth, mail, rcpt <addr>, data, quit. */
  steps: { step: string; code: number; text: string }[];
  /** An exception that ended the session (the server closed the connection, say). */
  error?: string;
}

const SCRIPT = String.raw`
import base64, json, smtplib, ssl, sys
job = json.load(sys.stdin)
steps = []
def note(step, reply):
    code, text = reply
    steps.append({"step": step, "code": code, "text": text.decode("latin1") if isinstance(text, bytes) else str(text)})
    return code
try:
    source = (job["sourceAddress"], 0) if job.get("sourceAddress") else None
    if job.get("implicitTls"):
        s = smtplib.SMTP_SSL(job.get("host", "127.0.0.1"), job["port"], timeout=60, source_address=source, context=ssl.create_default_context(cafile=job.get("caFile")))
    else:
        s = smtplib.SMTP(job.get("host", "127.0.0.1"), job["port"], timeout=60, source_address=source)
    note("ehlo", s.ehlo("client.example"))
    if job.get("starttls"):
        ctx = ssl.create_default_context(cafile=job.get("caFile"))
        note("starttls", s.starttls(context=ctx))
        note("ehlo", s.ehlo("client.example"))
    if job.get("accessToken"):
        sasl = base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (job["user"], job["accessToken"])).encode()).decode()
        code = note("auth", s.docmd("AUTH", "XOAUTH2 " + sasl))
        if code == 334:
            note("auth", s.docmd(""))
    elif job.get("user"):
        plain = base64.b64encode(("\0%s\0%s" % (job["user"], job["password"])).encode()).decode()
        note("auth", s.docmd("AUTH", "PLAIN " + plain))
    if note("mail", s.mail(job["from"])) == 250:
        accepted = [to for to in job["to"] if note("rcpt " + to, s.rcpt(to)) in (250, 251)]
        if accepted:
            note("data", s.data(base64.b64decode(job["message"])))
    note("quit", s.quit())
except Exception as e:
    print(json.dumps({"steps": steps, "error": "%s: %s" % (type(e).__name__, e)}))
else:
    print(json.dumps({"steps": steps}))
`;

export function smtplibSession(job: SmtpJob, timeoutMs = 90_000): Promise<SmtpReport> {
  return new Promise((resolve, reject) => {
    const child = execFile('python3', ['-c', SCRIPT], { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && stdout.trim() === '') return reject(new Error(`smtplib failed: ${err.message}\n${stderr}`));
      try {
        resolve(JSON.parse(stdout) as SmtpReport);
      } catch {
        reject(new Error(`smtplib printed no report: ${stdout}\n${stderr}`));
      }
    });
    child.stdin!.end(JSON.stringify({ ...job, message: job.message.toString('base64') }));
  });
}

/** The reply of one step, as "code text" (the last one of that name). */
export function stepReply(report: SmtpReport, step: string): string | undefined {
  const found = report.steps.filter((s) => s.step === step).at(-1);
  return found === undefined ? undefined : `${found.code} ${found.text}`;
}

export interface AuthAttempts {
  port: number;
  host?: string;
  sourceAddress?: string;
  /** AUTH PLAIN with each, in turn, on one connection. */
  attempts: { user: string; password: string }[];
}

export interface AuthReport {
  /** Each attempt's reply and how long it took to come, as smtplib saw them. */
  replies: { code: number; text: string; ms: number }[];
  /** How the session ended: "closed" when the server hung up, else the error or "open". */
  end: string;
}

const AUTH_SCRIPT = String.raw`
import base64, json, smtplib, sys, time
job = json.load(sys.stdin)
replies = []
end = "open"
try:
    source = (job["sourceAddress"], 0) if job.get("sourceAddress") else None
    s = smtplib.SMTP(job.get("host", "127.0.0.1"), job["port"], timeout=60, source_address=source)
    s.ehlo("client.example")
    for a in job["attempts"]:
        plain = base64.b64encode(("\0%s\0%s" % (a["user"], a["password"])).encode()).decode()
        started = time.monotonic()
        code, text = s.docmd("AUTH", "PLAIN " + plain)
        replies.append({"code": code, "text": text.decode("latin1"), "ms": round((time.monotonic() - started) * 1000)})
    try:
        s.noop()
    except smtplib.SMTPServerDisconnected:
        end = "closed"
except smtplib.SMTPServerDisconnected:
    end = "closed"
except Exception as e:
    end = "%s: %s" % (type(e).__name__, e)
print(json.dumps({"replies": replies, "end": end}))
`;

/** Several AUTH PLAIN attempts on one smtplib connection, each timed; then whether it is still open. */
export function smtplibAuthAttempts(job: AuthAttempts, timeoutMs = 90_000): Promise<AuthReport> {
  return new Promise((resolve, reject) => {
    const child = execFile('python3', ['-c', AUTH_SCRIPT], { timeout: timeoutMs }, (err, stdout, stderr) => {
      try {
        resolve(JSON.parse(stdout) as AuthReport);
      } catch {
        reject(new Error(`smtplib printed no report${err ? ` (${err.message})` : ''}: ${stdout}\n${stderr}`));
      }
    });
    child.stdin!.end(JSON.stringify(job));
  });
}
