/**
 * Counts client connections, in all and per address, so that one address (or a flood from
 * many) cannot take every session slot or every backend connection.
 */
export interface ConnectionLimits {
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
}

export type Admission =
  { admitted: true; release: () => void } | { admitted: false; limit: 'total' | 'per-ip'; reason: string };

export class ConnectionLimiter {
  private total = 0;
  private readonly perAddress = new Map<string, number>();

  constructor(private readonly limits: ConnectionLimits) {}

  admit(address: string): Admission {
    if (this.total >= this.limits.maxConnections)
      return { admitted: false, limit: 'total', reason: 'Too many connections, try again later.' };
    const current = this.perAddress.get(address) ?? 0;
    if (current >= this.limits.maxConnectionsPerIp) {
      return { admitted: false, limit: 'per-ip', reason: 'Too many connections from your address, try again later.' };
    }
    this.total++;
    this.perAddress.set(address, current + 1);
    let released = false;
    return {
      admitted: true,
      release: () => {
        if (released) return;
        released = true;
        this.total--;
        const left = (this.perAddress.get(address) ?? 1) - 1;
        if (left > 0) this.perAddress.set(address, left);
        else this.perAddress.delete(address);
      },
    };
  }
}
