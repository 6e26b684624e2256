// Starting and stopping `herd serve` for the SDK tests: on 127.0.0.1 at a
// free port, ready once /health answers 200 (the port opens before the
// model is loaded); every wait bounded.
import { spawn } from "node:child_process";

// herd serve -m model on a free port with args; resolves {proc, port}.
export function startServer(herd, model, args = []) {
  return new Promise((resolve, reject) => {
    const proc = spawn(herd, ["serve", "-m", model, "--port", "0", "--threads", "1", "-q", ...args], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let log = "";
    const timer = setTimeout(() => reject(new Error("server did not start: " + log)), 30000);
    proc.stderr.on("data", (d) => {
      log += d;
      const m = log.match(/on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m && !proc.port) {
        proc.port = Number(m[1]);
        const poll = async () => {
          try {
            const r = await fetch(`http://127.0.0.1:${proc.port}/health`);
            if (r.status === 200) {
              clearTimeout(timer);
              resolve({ proc, port: proc.port });
              return;
            }
          } catch (e) { /* not yet */ }
          setTimeout(poll, 20);
        };
        poll();
      }
    });
    proc.on("exit", (code) => reject(new Error(`server exited ${code}: ${log}`)));
  });
}

// SIGTERM (SIGKILL after 20 s); resolves the exit code.
export function stopServer(s) {
  return new Promise((resolve) => {
    const t = setTimeout(() => s.proc.kill("SIGKILL"), 20000);
    s.proc.removeAllListeners("exit");
    s.proc.on("exit", (code) => {
      clearTimeout(t);
      resolve(code);
    });
    s.proc.kill("SIGTERM");
  });
}
