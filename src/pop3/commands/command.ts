/** Argument counts a command handler accepts. */
export const args = {
  none: (n: number) => n === 0,
  one: (n: number) => n === 1,
  two: (n: number) => n === 2,
  optional: (n: number) => n <= 1,
  any: () => true,
};
