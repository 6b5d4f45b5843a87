/** Whether a client's address is this machine's own (where a password needs no TLS). */
export function isLoopback(address: string): boolean {
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}
