import { EventEmitter } from 'node:events';

/** EventEmitter whose event names and listener arguments are checked by the compiler. */
export class TypedEmitter<Events extends Record<string, unknown[]>> {
  private readonly ee = new EventEmitter({ captureRejections: false });

  on<K extends keyof Events & string>(event: K, listener: (...args: Events[K]) => void): this {
    this.ee.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  once<K extends keyof Events & string>(event: K, listener: (...args: Events[K]) => void): this {
    this.ee.once(event, listener as (...args: unknown[]) => void);
    return this;
  }

  off<K extends keyof Events & string>(event: K, listener: (...args: Events[K]) => void): this {
    this.ee.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /** Listeners of `event` now: lets a test see that a close() removed what it added. */
  listenerCount<K extends keyof Events & string>(event: K): number {
    return this.ee.listenerCount(event);
  }

  protected emit<K extends keyof Events & string>(event: K, ...args: Events[K]): void {
    this.ee.emit(event, ...args);
  }

  protected removeAllListeners(): void {
    this.ee.removeAllListeners();
  }
}
