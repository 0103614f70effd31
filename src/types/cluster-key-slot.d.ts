/** Redis Cluster's hash slot of a key (CRC16, hash tags honoured); the package has no types. */
declare module "cluster-key-slot" {
  function calculateSlot(key: string | Buffer): number;
  export default calculateSlot;
}
