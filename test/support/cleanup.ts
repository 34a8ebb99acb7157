/**
 * Runs a test body, then its cleanup, whatever the body did. A cleanup that
 * fails after a failed body must not hide why the body failed: both are
 * reported then.
 */
export async function withCleanup<T>(body: () => Promise<T>, cleanup: () => Promise<unknown>): Promise<T> {
  let result: T;
  try {
    result = await body();
  } catch (bodyError) {
    try {
      await cleanup();
    } catch (cleanupError) {
      throw new AggregateError([bodyError, cleanupError], "the test failed, and so did its cleanup", {
        cause: cleanupError,
      });
    }
    throw bodyError;
  }
  await cleanup();
  return result;
}
