/**
 * The smallest part of the `reflect-metadata` API that tsyringe (used inside @peculiar/x509)
 * needs at load time: it throws unless `Reflect.getMetadata` exists, and its `@injectable`
 * decorator reads constructor parameter metadata. We do not use decorators ourselves, so a
 * WeakMap-backed store is enough. It installs nothing when a real polyfill is already loaded;
 * replace this module with the `reflect-metadata` package once that is a dependency.
 */

type MetadataTarget = object;
type MetadataStore = Map<unknown, unknown>;

interface ReflectWithMetadata {
  getMetadata?: (key: unknown, target: MetadataTarget) => unknown;
  getOwnMetadata?: (key: unknown, target: MetadataTarget) => unknown;
  defineMetadata?: (key: unknown, value: unknown, target: MetadataTarget) => void;
  hasOwnMetadata?: (key: unknown, target: MetadataTarget) => boolean;
  metadata?: (key: unknown, value: unknown) => (target: MetadataTarget) => void;
}

const reflect = Reflect as unknown as ReflectWithMetadata;

if (typeof reflect.getMetadata !== "function") {
  const stores = new WeakMap<MetadataTarget, MetadataStore>();
  const storeOf = (target: MetadataTarget): MetadataStore => {
    let store = stores.get(target);
    if (store === undefined) {
      store = new Map();
      stores.set(target, store);
    }
    return store;
  };
  reflect.getOwnMetadata = (key, target) => stores.get(target)?.get(key);
  reflect.hasOwnMetadata = (key, target) => stores.get(target)?.has(key) ?? false;
  reflect.defineMetadata = (key, value, target) => {
    storeOf(target).set(key, value);
  };
  reflect.getMetadata = (key, target) => {
    // Like reflect-metadata: own metadata first, then up the prototype chain.
    for (let current: object | null = target; current !== null; ) {
      const store = stores.get(current);
      if (store?.has(key)) return store.get(key);
      current = Object.getPrototypeOf(current) as object | null;
    }
    return undefined;
  };
  reflect.metadata = (key, value) => (target) => {
    storeOf(target).set(key, value);
  };
}
