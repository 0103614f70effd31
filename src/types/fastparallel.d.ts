/** The part of fastparallel (no types of its own) that mqemitter's queue uses. */
declare module "fastparallel" {
  function fastparallel(options: { results: false; released: () => void }): unknown;
  export default fastparallel;
}
