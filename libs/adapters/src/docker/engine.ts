/**
 * A thin Docker Engine API client over its unix socket (only what the agent needs so far).
 */
import * as http from 'node:http';

export class DockerApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = 'DockerApiError';
  }
}

export class DockerEngine {
  private readonly socketPath: string;

  /** `url` is `unix:///var/run/docker.sock`. */
  constructor(url: string) {
    if (!url.startsWith('unix://')) throw new Error(`only unix:// Docker endpoints are supported, got ${url}`);
    this.socketPath = url.slice('unix://'.length);
  }

  private get<T>(path: string, timeoutMs = 5_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const req = http.get({ socketPath: this.socketPath, path, timeout: timeoutMs }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => {
          if (res.statusCode !== 200) {
            let msg = body;
            try {
              msg = (JSON.parse(body) as { message?: string }).message ?? body;
            } catch {
              /* plain text */
            }
            return reject(new DockerApiError(res.statusCode ?? 0, `Docker ${path}: ${res.statusCode} ${msg.trim()}`));
          }
          try {
            resolve(JSON.parse(body) as T);
          } catch (e) {
            reject(e);
          }
        });
      });
      req.on('timeout', () => req.destroy(new Error(`Docker ${path}: no answer within ${timeoutMs} ms`)));
      req.on('error', reject);
    });
  }

  async networkName(id: string): Promise<string | undefined> {
    try {
      return (await this.get<{ Name: string }>(`/networks/${encodeURIComponent(id)}`)).Name;
    } catch (e) {
      if (e instanceof DockerApiError && e.status === 404) return undefined;
      throw e;
    }
  }
}
